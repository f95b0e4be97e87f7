"""Public-format loaders, each on a small file written in that dataset's exact format."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.datasets.chestx_det import load_chestx_det, polygons_to_masks
from training.datasets.coco import load_coco
from training.datasets.nih import load_nih, read_bbox_list
from training.datasets.records import load_mask
from training.datasets.rsna import NOT_NORMAL, UNASSESSED, load_rsna
from training.datasets.shared_cxr import load_nih_labels_json, load_openist_normals
from training.datasets.siim import load_siim, rle_decode, rle_encode
from training.datasets.vindr import load_vindr

NIH_DATA_ENTRY = """\
Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000003_000.png,Hernia|Nodule|Effusion,0,3,81,F,PA,2582,2991,0.143,0.143,
00000005_000.png,No Finding,0,5,69,F,PA,2048,2500,0.168,0.168,
00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,60,M,AP,3056,2544,0.139,0.139,
"""
NIH_BBOX = """\
Image Index,Finding Label,Bbox [x,y,w,h],,,
00000003_000.png,Nodule,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,
00000003_000.png,Infiltrate,100,100,50,60,,,
00000001_000.png,Cardiomegaly,331.0,402.0,500.0,300.0,,,
"""


def test_nih(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text(NIH_DATA_ENTRY)
    (tmp_path / "BBox_List_2017.csv").write_text(NIH_BBOX)
    (tmp_path / "images_001" / "images").mkdir(parents=True)
    (tmp_path / "images_001" / "images" / "00000003_000.png").write_bytes(b"")
    recs = {r.image_id: r for r in load_nih(tmp_path / "Data_Entry_2017.csv", tmp_path,
                                            tmp_path / "BBox_List_2017.csv", image_size=512)}
    assert len(recs) == 5
    r = recs["00000003_000"]
    assert r.labels == {"nodule_mass", "pleural_effusion"} and r.other_labels == {"Hernia", "Infiltrate"}
    assert r.patient_id == "3" and r.view == "PA" and r.label_quality == "expert"
    assert r.image_path.endswith("images_001/images/00000003_000.png")
    # boxes: x,y,w,h in 1024 px -> x1,y1,x2,y2 at 512 px
    cls, x1, y1, x2, y2 = r.boxes[0]
    assert cls == "nodule_mass"
    np.testing.assert_allclose([x1, y1, x2, y2], np.array([225.0847, 547.0192, 311.8644, 626.2057]) / 2, atol=1e-3)
    assert r.other_boxes[0][0] == "Infiltrate"
    assert r.pixel_spacing_mm == pytest.approx((0.143 * 2582 + 0.143 * 2991) / 2 / 512, rel=1e-4)
    assert recs["00000005_000"].is_normal and recs["00000005_000"].label_quality == "report"
    assert not recs["00000001_000"].is_normal and not recs["00000001_000"].labels
    assert recs["00000013_005"].labels == {"pneumothorax"} and recs["00000013_005"].view == "AP"
    assert recs["00000013_005"].extra["Patient Age"] == "60"


def test_nih_bbox_header_checked(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="BBox_List"):
        read_bbox_list(p)


def test_rsna(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        "0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0\n"
        "00313ee0-9eaa-42f4-b0ab-c148ed3241cd,,,,,0\n"
        "00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1\n"
        "00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1\n"
        "003d8fa0-6bf1-40ed-b54c-ac657f8495c5,,,,,0\n")
    (tmp_path / "stage_2_detailed_class_info.csv").write_text(
        "patientId,class\n"
        "0004cfab-14fd-4e49-80ba-63a80b6bddd6,No Lung Opacity / Not Normal\n"
        "00313ee0-9eaa-42f4-b0ab-c148ed3241cd,No Lung Opacity / Not Normal\n"
        "00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity\n"
        "00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity\n"
        "003d8fa0-6bf1-40ed-b54c-ac657f8495c5,Normal\n")
    recs = load_rsna(tmp_path / "stage_2_train_labels.csv", tmp_path / "imgs", tmp_path / "stage_2_detailed_class_info.csv")
    assert [r.image_id[:8] for r in recs] == ["0004cfab", "00313ee0", "00436515", "003d8fa0"]
    pos = recs[2]
    assert pos.labels == {"consolidation"}
    assert pos.boxes == [("consolidation", 264.0, 152.0, 477.0, 531.0), ("consolidation", 562.0, 152.0, 818.0, 605.0)]
    assert pos.image_path.endswith("imgs/00436515-870c-4b36-a041-de91049b9ab4.dcm")
    assert recs[0].other_labels == {NOT_NORMAL} and not recs[0].is_normal
    assert recs[3].is_normal
    without_info = load_rsna(tmp_path / "stage_2_train_labels.csv", tmp_path)
    assert without_info[3].other_labels == {UNASSESSED}


def test_siim_rle_round_trip_and_loader(tmp_path, rng):
    mask = np.zeros((1024, 1024), bool)
    mask[100:300, 600:650] = True  # a right-of-centre vertical band: catches a transposed decode
    mask[500:505, 10:900] = True
    for relative in (True, False):
        enc = rle_encode(mask, relative)
        assert (rle_decode(enc, 1024, 1024, relative) == mask).all()
    enc = rle_encode(mask)
    first_start = int(enc.split()[0])
    # column-major: the first run is in column 10, row 500
    assert first_start == 10 * 1024 + 500
    second = np.zeros((1024, 1024), bool)
    second[800:820, 100:120] = True
    (tmp_path / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n"
        f"1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090, -1\n"
        f"1.2.276.0.7230010.3.1.4.8323329.12515.1517875239.501137, {enc}\n"
        f"1.2.276.0.7230010.3.1.4.8323329.12515.1517875239.501137, {rle_encode(second)}\n")
    sub = tmp_path / "dicom-images-train" / "1.2.3" / "4.5.6"
    sub.mkdir(parents=True)
    (sub / "1.2.276.0.7230010.3.1.4.8323329.12515.1517875239.501137.dcm").write_bytes(b"")
    recs = {r.image_id.split(".")[-2]: r for r in load_siim(tmp_path / "train-rle.csv", tmp_path)}
    neg, pos = recs["1517875188"], recs["1517875239"]
    assert neg.labels == set() and not neg.is_normal  # "no pneumothorax" is not "normal"
    assert pos.labels == {"pneumothorax"} and pos.image_path.endswith("4.5.6/" + pos.image_id + ".dcm")
    assert (load_mask(pos.masks["pneumothorax"]) == (mask | second)).all()
    assert not load_mask(neg.masks["pneumothorax"]).any()
    with pytest.raises(ValueError, match="odd"):
        rle_decode("1 2 3", 4, 4)
    with pytest.raises(ValueError, match="leaves"):
        rle_decode("10 10", 4, 4)


def test_vindr(tmp_path):
    (tmp_path / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R11,,,,\n"
        "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R7,,,,\n"
        "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0\n"
        "9a5094b2563a1ef3ff50dc5c7ff71345,Pleural effusion,10,R9,1789.0,1729.0,1875.0,1992.0\n"
        "9a5094b2563a1ef3ff50dc5c7ff71345,Pleural effusion,10,R10,1780.0,1720.0,1870.0,1990.0\n"
        "9a5094b2563a1ef3ff50dc5c7ff71345,Nodule/Mass,8,R9,500.0,600.0,540.0,640.0\n")
    recs = {r.image_id: r for r in load_vindr(tmp_path / "train.csv", tmp_path / "train")}
    normal, sick = recs["50a418190bc3fb1ef1633bf9678929b3"], recs["9a5094b2563a1ef3ff50dc5c7ff71345"]
    assert normal.is_normal and normal.image_path.endswith("train/50a418190bc3fb1ef1633bf9678929b3.dicom")
    assert sick.labels == {"pleural_effusion", "nodule_mass"} and sick.other_labels == {"Cardiomegaly"}
    assert ("pleural_effusion", 1789.0, 1729.0, 1875.0, 1992.0) in sick.boxes and len(sick.boxes) == 3
    assert sick.extra["box_rad_ids"] == ["R9", "R10", "R9"]
    # consensus: effusion marked by two readers, nodule by one
    strict = {r.image_id: r for r in load_vindr(tmp_path / "train.csv", tmp_path, min_readers=2)}
    assert strict["9a5094b2563a1ef3ff50dc5c7ff71345"].labels == {"pleural_effusion"}
    # PhysioNet layout: no class_id column
    (tmp_path / "annotations_train.csv").write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
        "000434271f63a053c4128a0ba6352c7f,R2,ILD,100,100,400,500\n")
    assert load_vindr(tmp_path / "annotations_train.csv", tmp_path)[0].labels == {"interstitial_opacity"}


def test_chestx_det(tmp_path):
    data = [
        {"file_name": "36199.png", "syms": ["Effusion", "Nodule", "Atelectasis"],
         "boxes": [[632, 721, 909, 969], [129, 611, 174, 656], [10, 10, 50, 50]],
         "polygons": [[[632, 721], [909, 721], [909, 969], [632, 969]], [[129, 611], [174, 611], [151, 656]],
                      [[10, 10], [50, 10], [50, 50]]]},
        {"file_name": "36204.png", "syms": [], "boxes": [], "polygons": []},
    ]
    (tmp_path / "train.json").write_text(json.dumps(data))
    recs = load_chestx_det(tmp_path / "train.json", tmp_path / "train_data")
    a, b = recs
    assert a.labels == {"pleural_effusion", "nodule_mass"} and a.other_labels == {"Atelectasis"}
    assert a.boxes[0] == ("pleural_effusion", 632.0, 721.0, 909.0, 969.0)
    assert b.is_normal and b.image_path.endswith("train_data/36204.png")
    masks = polygons_to_masks(a.extra["polygons"], a.extra["syms"], (1024, 1024))
    assert set(masks) == {"pleural_effusion", "nodule_mass"}
    ys, xs = np.nonzero(masks["pleural_effusion"])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (632, 909, 721, 969)
    (tmp_path / "bad.json").write_text(json.dumps([{"file_name": "x.png", "syms": ["Nodule"], "boxes": []}]))
    with pytest.raises(ValueError, match="syms"):
        load_chestx_det(tmp_path / "bad.json", tmp_path)


def test_coco_written(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "sick/s0001.png", "width": 512, "height": 512},
                       {"id": 2, "file_name": "tb/tb0001.png", "width": 512, "height": 512},
                       {"id": 3, "file_name": "health/h0002.png", "width": 512, "height": 512}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    sick, tb, healthy = load_coco(tmp_path / "c.json", tmp_path)
    assert tb.other_boxes == [("ActiveTuberculosis", 10.0, 20.0, 40.0, 60.0)] and not tb.labels
    assert not sick.is_normal and healthy.is_normal
    coco["annotations"][0]["category_id"] = 9
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="unknown category"):
        load_coco(tmp_path / "c.json", tmp_path)


# ---- real files from ../shared/data ---------------------------------------------
def test_coco_tbx11k_real(shared_data):
    base = shared_data / "cxr" / "samples" / "tbx11k_test_data"
    recs = {r.image_id: r for r in load_coco(base / "annotations" / "json" / "TBX11K_train.json", base / "imgs")}
    assert set(recs) == {"tb0005", "tb0007", "h0001"}
    assert recs["h0001"].is_normal
    assert recs["tb0007"].other_labels == {"ObsoletePulmonaryTuberculosis"} and len(recs["tb0007"].other_boxes) == 2
    for r in recs.values():
        from pathlib import Path
        assert Path(r.image_path).is_file()
        for _, x1, y1, x2, y2 in r.other_boxes:
            assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512


def test_shared_nih_labels_json(shared_data):
    recs = load_nih_labels_json(shared_data / "cxr" / "nih")
    assert len(recs) == 680
    assert sum(r.is_normal for r in recs) == 343  # the "No Finding" images
    assert len({r.patient_id for r in recs}) < 680
    boxed = [r for r in recs if r.boxes]
    assert len(boxed) >= 60 and all(r.label_quality == "expert" for r in boxed)
    for r in boxed:
        for cls, x1, y1, x2, y2 in r.boxes:
            assert cls in r.labels and 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert {"consolidation", "pleural_effusion", "nodule_mass", "pneumothorax"} <= set().union(*(r.labels for r in recs))


def test_shared_openist(shared_data):
    recs = load_openist_normals(shared_data / "cxr" / "normal-openist")
    assert len(recs) == 220 and all(r.is_normal for r in recs)
    m = load_mask(recs[0].masks["lung"])
    assert m.dtype == bool and 0.1 < m.mean() < 0.6
