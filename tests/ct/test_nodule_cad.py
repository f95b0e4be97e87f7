"""Nodule CAD parts: blob candidates (sphere vs tube), per-nodule segmentation, candidate
patches, the classifier's training sampler and ONNX parity."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.ct.blobs import closed_lungs, detect, segment_blob
from models.ct.nodules import FPR_PATCH, NodulePipeline, candidate_patches, cut_patches, normalise
from training.synthesis.ct_nodules import NoduleSpec, insert_nodule


def _lung_with_vessel_and_nodule(kind="solid", d=10.0):
    rng = np.random.default_rng(0)
    hu = (-850 + rng.normal(0, 20, (48, 64, 64))).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij")
    tube = (yy - 20) ** 2 + (xx - 16) ** 2 <= 2.0 ** 2  # a vessel along z (3 voxels wide)
    hu[tube] = 40.0
    level = 30.0 if kind == "solid" else -600.0
    spec = NoduleSpec((24.0, 40.0, 44.0), d, kind, level, 0.5 if kind == "part-solid" else 0.0,
                      (1.0, 1.0, 1.0), 0.05, 3)
    hu, m = insert_nodule(hu, (1.5, 1.5, 1.5), spec, rng)
    return hu, m, tube


@pytest.mark.parametrize("kind", ["solid", "ground-glass", "part-solid"])
def test_detect_finds_the_sphere_first_and_not_the_tube(kind):
    hu, m, tube = _lung_with_vessel_and_nodule(kind)
    cands = detect(hu, (1.5, 1.5, 1.5), np.ones(hu.shape, bool))
    assert cands, "no candidate"
    top = np.asarray(cands[0].zyx)
    assert np.linalg.norm((top - np.array([24, 40, 44])) * 1.5) < 3.0
    assert 2.0 < cands[0].radius_mm < 10.0  # a 10 mm nodule: radius ~5 mm
    # the tube gives no candidate with a response close to the sphere's
    on_tube = [c.response for c in cands if tube[tuple(int(round(v)) for v in c.zyx)]]
    assert not on_tube or max(on_tube) < 0.5 * cands[0].response


@pytest.mark.parametrize("kind,d", [("solid", 6.0), ("solid", 16.0), ("ground-glass", 12.0), ("part-solid", 14.0)])
def test_segment_blob_matches_inserted_nodule_and_cuts_the_vessel(kind, d):
    rng = np.random.default_rng(1)
    hu = (-850 + rng.normal(0, 20, (48, 64, 64))).astype(np.float32)
    w = 1 if kind == "solid" and d > 10 else 0  # a vessel (4.5 or 1.5 mm wide) through the nodule
    hu[24 - w:25 + w, 40 - w:41 + w, :] = 40.0
    spec = NoduleSpec((24.0, 40.0, 30.0), d, kind, 30.0 if kind == "solid" else -600.0,
                      0.5 if kind == "part-solid" else 0.0, (1.0, 1.0, 1.0), 0.0, 1)
    hu, truth = insert_nodule(hu, (1.5, 1.5, 1.5), spec, rng)
    c = detect(hu, (1.5, 1.5, 1.5), np.ones(hu.shape, bool))[0]  # centre and radius as the pipeline has them
    mask, box = segment_blob(hu, c.zyx, c.radius_mm, (1.5, 1.5, 1.5))
    full = np.zeros(hu.shape, bool)
    full[box] = mask
    dice = 2 * (full & truth).sum() / (full.sum() + truth.sum())
    # part-solid: the ground-glass halo is found but over-segmented (a known weakness, see docs/ct.md)
    assert dice > (0.6 if kind == "part-solid" else 0.68), dice
    assert full[truth].mean() > 0.8
    assert not full[24, 40, 30 + int(d / 1.5) + 6:].any()  # the vessel beyond the nodule is cut


def test_segment_blob_inscribed_opening_cuts_a_thick_vessel_the_candidate_radius_keeps():
    """A 12 mm nodule on a 4.5 mm-wide vessel, seen through a blob radius that under-estimates
    it: the candidate-radius opening (ball of 1 voxel) keeps the vessel; the opening from the
    mask's inscribed radius near the centre (2 voxels) cuts it, and the nodule stays whole."""
    rng = np.random.default_rng(2)
    hu = (-850 + rng.normal(0, 15, (40, 48, 64))).astype(np.float32)
    hu[19:22, 23:26, 20:] = 40.0  # vessel leaving the nodule along +x
    spec = NoduleSpec((20.0, 24.0, 20.0), 12.0, "solid", 30.0, 0.0, (1.0, 1.0, 1.0), 0.0, 1)
    hu, truth = insert_nodule(hu, (1.5, 1.5, 1.5), spec, rng)
    ends = {}
    for name, kw in (("candidate", {}), ("inscribed", {"open_from": "inscribed", "open_scale": 0.6, "regrow": 1})):
        mask, box = segment_blob(hu, (20.0, 24.0, 20.0), 4.0, (1.5, 1.5, 1.5), **kw)
        full = np.zeros(hu.shape, bool)
        full[box] = mask
        assert full[truth].mean() > 0.9, name
        ends[name] = int(np.argwhere(full)[:, 2].max())
    nodule_end = int(np.argwhere(truth)[:, 2].max())
    assert ends["candidate"] >= nodule_end + 3  # the vessel is taken in (to the 12 mm search sphere)
    assert ends["inscribed"] <= nodule_end + 2  # a stub of at most the regrowth


def test_closed_lungs_takes_in_a_wall_notch():
    lungs = np.zeros((30, 40, 40), bool)
    lungs[5:25, 5:35, 5:35] = True
    lungs[12:18, 5:11, 17:23] = False  # a juxtapleural bump at the border
    closed = closed_lungs(lungs, (1.5, 1.5, 1.5), radius_mm=9.0)
    assert closed[15, 7, 20] and closed[lungs].all()
    assert not closed[0, 0, 0]


def test_candidate_patches_centre_and_mirror_padding():
    hu = np.full((20, 20, 20), -1000.0, np.float32)
    hu[10, 10, 10] = 400.0
    p = candidate_patches(hu, np.array([[10.2, 9.8, 10.0], [0.0, 0.0, 0.0]]))
    assert p.shape == (2, FPR_PATCH, FPR_PATCH, FPR_PATCH)
    assert p[0, FPR_PATCH // 2, FPR_PATCH // 2, FPR_PATCH // 2] == pytest.approx(1.0)
    lo = normalise(np.full(1, -1000.0))[0]
    assert p[1][26, 26, 26] == pytest.approx(1.0)
    # mirrored at the border: voxel 10 reappears at -11 (patch index 5) along each axis
    assert p[1][5, 5, 5] == pytest.approx(1.0) and p[1][5, 26, 26] == pytest.approx(1.0)
    assert (p[1] > lo).sum() == 8


def _toy_source():
    """A training source for the classifier's sampler: the toy lung with one negative (the vessel)."""
    from models.ct.volume import CTVolume
    from training.ct.data import LungVolume
    from training.ct.fpr_data import FprSource

    hu, _, _ = _lung_with_vessel_and_nodule()
    lungs = np.zeros(hu.shape, bool)
    lungs[4:44, 6:58, 6:58] = True
    return FprSource(LungVolume(CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3)), lungs),
                     np.array([[24.0, 20.0, 16.0]]), "toy")


def test_fpr_sampler_and_classifier_export(tmp_path):
    torch = pytest.importorskip("torch")
    from training.ct.export import export_onnx
    from training.ct.fpr_data import fpr_sample
    from training.ct.networks import fpr_cnn
    from training.ct.train_fpr import train_fpr

    torch.set_num_threads(1)
    src = _toy_source()
    rng = np.random.default_rng(0)
    x1, y1 = fpr_sample([src], rng, p_pos=1.0)
    x0, y0 = fpr_sample([src], rng, p_pos=0.0)
    assert x1.shape == (FPR_PATCH,) * 3 and y1[0] == 1.0 and y0[0] == 0.0
    net = fpr_cnn()
    info = train_fpr(net, lambda r, label: fpr_sample([src], r, p_pos=float(label)), tmp_path, budget_s=60,
                     batch=4, max_iters=2, log_every=1)
    assert info["iterations"] == 2 and (tmp_path / "model.pt").is_file()
    res = export_onnx(net, tmp_path / "fpr.onnx", 1, FPR_PATCH, x1[None, None])
    assert res["parity_max_abs_diff"] < 1e-3



def _ball_volume(r_vox=5.0, n=61):
    zz, yy, xx = np.meshgrid(*[np.arange(n) for _ in range(3)], indexing="ij")
    d = np.sqrt((zz - n // 2) ** 2 + (yy - n // 2) ** 2 + (xx - n // 2) ** 2)
    return np.where(d <= r_vox, 40.0, -850.0).astype(np.float32)


def test_rotated_patch_keeps_the_centre_and_scales_the_anatomy():
    from training.ct.fpr_data import rotated_patch

    hu = _ball_volume()
    c = np.full(3, 30.0)
    plain = candidate_patches(hu, c[None])[0]
    rng = np.random.default_rng(1)
    for _ in range(5):  # a ball centred on the candidate looks the same under any rotation
        rot = rotated_patch(hu, c, rng, scale_range=(1.0, 1.0))
        assert rot.shape == (FPR_PATCH,) * 3
        assert np.abs(rot - plain).mean() < 0.01
        assert rot[FPR_PATCH // 2, FPR_PATCH // 2, FPR_PATCH // 2] == pytest.approx(plain[16, 16, 16])
    inside = plain > 0.5
    zoomed = rotated_patch(hu, c, rng, scale_range=(1.15, 1.15)) > 0.5  # output step 1.15 voxels
    assert zoomed.sum() == pytest.approx(inside.sum() / 1.15 ** 3, rel=0.15)
    # an elongated structure changes direction: a tube along z is no longer along z
    tube = np.full((61, 61, 61), -850.0, np.float32)
    tube[:, 28:33, 28:33] = 40.0
    moved = [rotated_patch(tube, c, np.random.default_rng(k), scale_range=(1.0, 1.0)) for k in range(4)]
    along_z = candidate_patches(tube, c[None])[0]
    assert all(np.abs(m - along_z).mean() > 0.02 for m in moved)


def test_draw_vessels_draws_a_tube_through_the_centre():
    from training.ct.fpr_data import draw_vessels

    bg = np.full((66, 66, 66), -850.0, np.float32)
    sizes = []
    for seed in range(8):
        out = draw_vessels(bg, 1.5, np.random.default_rng(seed))
        assert (out >= bg).all()  # drawn over the anatomy, never darker than it
        assert out[33, 33, 33] >= -80.0  # the junction is on the candidate point
        bright = np.argwhere(out > -400)
        ext = np.ptp(bright @ np.linalg.svd(bright - bright.mean(0))[2][0], 0)  # length along the main axis
        assert ext > 40  # a tube crossing the cube, not a blob
        sizes.append(len(bright))
    assert len(set(sizes)) == 8
    # the anatomy behind a vessel stays where it is brighter (a vessel never erases a nodule)
    hot = bg.copy()
    hot[30:37, 30:37, 30:37] = 400.0
    assert (draw_vessels(hot, 1.5, np.random.default_rng(0))[30:37, 30:37, 30:37] == 400.0).all()


def test_fpr_sampler_with_anatomy_augmentation_and_mean_logit_ensemble(tmp_path):
    torch = pytest.importorskip("torch")
    from training.ct.export import export_onnx
    from training.ct.fpr_data import fpr_sample
    from training.ct.networks import MeanLogit, fpr_cnn

    torch.set_num_threads(1)
    src = _toy_source()
    rng = np.random.default_rng(0)
    for label in (1.0, 0.0):
        for _ in range(6):
            x, y = fpr_sample([src], rng, p_pos=label, anatomy_aug=True, p_rotate=0.5, p_vessel=0.5)
            assert x.shape == (FPR_PATCH,) * 3 and x.dtype == np.float32 and y[0] == label
            assert -0.2 < x.min() and x.max() < 1.2
    torch.manual_seed(0)
    a, b = fpr_cnn(), fpr_cnn()
    ens = MeanLogit([a, b]).eval()
    xb = torch.from_numpy(np.stack([fpr_sample([src], rng, p_pos=1.0)[0] for _ in range(3)]))[:, None]
    with torch.no_grad():
        assert torch.allclose(ens(xb), (a.eval()(xb) + b.eval()(xb)) / 2, atol=1e-6)
    res = export_onnx(ens, tmp_path / "ens.onnx", 1, FPR_PATCH, xb.numpy())
    assert res["parity_max_abs_diff"] < 1e-3

def test_face_mirror_matches_the_pipeline_at_a_real_last_slice():
    from training.ct.fpr_data import face_mirror

    rng = np.random.default_rng(0)
    hu = rng.normal(-700, 200, (60, 40, 40)).astype(np.float32)
    c = np.array([[30.0, 20.0, 20.0]])
    whole = cut_patches(hu, c)[0]
    seen = set()
    for seed in range(40):
        out = face_mirror(whole, np.random.default_rng(seed), max_offset=6)
        # the same as cutting the patch from a scan that ends at some slice near the centre
        match = [e for e in range(24, 40) if np.array_equal(out, cut_patches(hu[:e], c)[0])]
        match += [-b for b in range(21, 37) if np.array_equal(out, cut_patches(hu[b:], c - [b, 0, 0])[0])]
        assert len(match) >= 1, seed
        seen.add(match[0])
        # the plane never comes closer than the anchor: the centre slice is kept
        assert np.array_equal(out[16], whole[16])
    assert len(seen) > 6  # both sides, several distances
    assert any(m < 0 for m in seen) and any(m > 0 for m in seen)


def test_face_augmented_nodule_patches_keep_the_nodule():
    from training.ct.fpr_data import fpr_sample

    src = _toy_source()
    rng = np.random.default_rng(3)
    for _ in range(8):
        x, y = fpr_sample([src], rng, p_pos=1.0, p_face=1.0)
        assert y[0] == 1.0 and x.shape == (FPR_PATCH,) * 3
        assert x[12:21, 12:21, 12:21].max() > 0.3  # the inserted nodule is still at the centre


def test_cut_sources_take_the_candidates_at_the_cut_face():
    from training.ct.fpr_data import cut_sources, fpr_sample

    src = _toy_source()
    n = src.lv.vol.shape[0]
    parts = cut_sources([src], cuts=(24,), band=4, floor=1.0)
    assert parts and all(p.name.startswith("toy_cut24_") for p in parts)
    for p in parts:
        lower = p.name.endswith("lower")
        assert p.lv.vol.shape[0] == (24 if lower else n - 24)
        face = p.lv.vol.shape[0] - 1 if lower else 0
        assert (np.abs(p.negatives[:, 0] - face) <= 4).all()  # only what the detector finds at the cut
        # the part is the same anatomy at the same place (origin moved with the cut)
        assert np.allclose(p.lv.vol.voxel_to_patient([0, 0, 0]), src.lv.vol.voxel_to_patient([0 if lower else 24, 0, 0]))
        x, y = fpr_sample([p], np.random.default_rng(0), p_pos=0.0)
        assert x.shape == (FPR_PATCH,) * 3 and y[0] == 0.0


def test_fpr_cnn_recovered_from_its_onnx_export(tmp_path):
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.ct.export import export_onnx
    from training.ct.networks import fpr_cnn, fpr_cnn_from_onnx, freeze_batch_norm

    torch.manual_seed(0)
    net = fpr_cnn()
    with torch.no_grad():  # non-trivial batch-norm statistics, which the export folds away
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    x = np.random.default_rng(0).random((3, 1, FPR_PATCH, FPR_PATCH, FPR_PATCH), dtype=np.float32)
    export_onnx(net.eval(), tmp_path / "m.onnx", 1, FPR_PATCH, x)
    back = fpr_cnn_from_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        assert np.abs(back(torch.from_numpy(x)).numpy() - want).max() < 1e-4
    back.train()
    freeze_batch_norm(back)  # fine-tuning: the folded statistics stay as they are
    with torch.no_grad():
        back[-2].p = 0.0  # no dropout for the comparison
        assert np.abs(back(torch.from_numpy(x)).numpy() - want).max() < 1e-4
    with pytest.raises(ValueError, match="not an fpr_cnn export"):
        torch.onnx.export(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)), torch.from_numpy(x),
                          str(tmp_path / "other.onnx"), dynamo=False)
        fpr_cnn_from_onnx(tmp_path / "other.onnx")


def _chest(shape=(40, 64, 64)):
    """Air-free body with a lung block (-850 HU) and soft tissue (40 HU) around it."""
    rng = np.random.default_rng(1)
    hu = (40 + rng.normal(0, 10, shape)).astype(np.float32)
    lungs = np.zeros(shape, bool)
    lungs[:, 8:56, 8:56] = True
    hu[lungs] = -850 + rng.normal(0, 15, int(lungs.sum()))
    return hu, lungs


def test_juxtapleural_pass_finds_a_wall_nodule():
    from models.ct.blobs import lung_candidates

    hu, lungs = _chest()
    # ground-glass nodule half in the chest wall (x = 8 is the pleura): a shoulder on the wall
    spec = NoduleSpec((20.0, 32.0, 8.0), 9.0, "ground-glass", -550.0, 0.0, (1.0, 1.0, 1.0), 0.0, 5)
    hu2, m = insert_nodule(hu, (1.5, 1.5, 1.5), spec)
    hu2[~lungs] = hu[~lungs]  # the wall stays wall
    c = np.argwhere(m & lungs).mean(0)

    def best(cands):
        near = [k.response for k in cands if np.linalg.norm((np.asarray(k.zyx) - c) * 1.5) <= 3.0]
        return max(near, default=0.0)

    region = ndimage.binary_dilation(lungs, iterations=3)
    plain = detect(hu2, (1.5, 1.5, 1.5), region, floor=1.0)
    flat = detect(hu2, (1.5, 1.5, 1.5), lungs, floor=1.0, fill_outside=True)
    assert best(flat) > 2 * best(plain)  # the flattened wall turns the shoulder into a blob
    both = lung_candidates(hu2, (1.5, 1.5, 1.5), lungs)
    assert any(k.source == "juxta" and np.linalg.norm((np.asarray(k.zyx) - c) * 1.5) <= 3.0 for k in both)
    # no juxta candidate duplicates a free-standing one
    blob = np.array([k.zyx for k in both if k.source == "blob"]) * 1.5
    rad = np.array([k.radius_mm for k in both if k.source == "blob"])
    for k in both:
        if k.source == "juxta":
            assert (np.linalg.norm(blob - np.asarray(k.zyx) * 1.5, axis=1) >= 0.8 * rad - 1e-6).all()


def test_nodule_cut_by_the_last_slice_is_a_candidate():
    hu = np.full((30, 48, 48), -850.0, np.float32)
    spec = NoduleSpec((29.0, 24.0, 24.0), 10.0, "solid", 30.0, 0.0, (1.0, 1.0, 1.0), 0.0, 2)
    hu, m = insert_nodule(hu, (1.5, 1.5, 1.5), spec)
    cands = detect(hu, (1.5, 1.5, 1.5), np.ones(hu.shape, bool))
    assert cands and np.linalg.norm((np.asarray(cands[0].zyx) - (29, 24, 24)) * 1.5) <= 5.0


def test_pipeline_reorients_to_the_training_orientation():
    """The same physical study stored LPS (axial DICOM, the training CT) and RAS (a NIfTI
    grid with rows and columns reversed) gives the same work array and candidates."""
    from models.ct.nodules import WORK_ORIENTATION, NodulePipeline
    from models.ct.volume import CTVolume

    hu, lungs = _chest((30, 64, 64))
    spec = NoduleSpec((15.0, 30.0, 20.0), 8.0, "solid", 30.0, 0.0, (1.0, 1.0, 1.0), 0.0, 4)
    hu, _ = insert_nodule(hu, (1.5, 1.5, 1.5), spec)
    lps = CTVolume(hu, (1.5, 1.5, 1.5), np.array([-50.0, -60.0, 100.0]), np.eye(3))
    far = lps.voxel_to_patient([0, 63, 63])  # the RAS grid starts at the LPS grid's last row/column
    ras = CTVolume(np.ascontiguousarray(hu[:, ::-1, ::-1]), (1.5, 1.5, 1.5), far, np.diag([-1.0, -1.0, 1.0]))
    pipe = NodulePipeline(model=object())
    a = pipe.pre_process(lps, lungs=lungs)
    b = pipe.pre_process(ras, lungs=np.ascontiguousarray(lungs[:, ::-1, ::-1]))
    assert WORK_ORIENTATION == "LPS"
    assert np.allclose(b.work.direction, np.eye(3)) and np.allclose(a.work.origin, b.work.origin)
    assert np.allclose(a.work.hu, b.work.hu)
    pa = sorted(tuple(np.round(a.work.voxel_to_patient(c.zyx), 1)) for c in a.candidates)
    pb = sorted(tuple(np.round(b.work.voxel_to_patient(c.zyx), 1)) for c in b.candidates)
    assert pa and pa == pb
    near = [p for p in pa if np.linalg.norm(np.asarray(p) - lps.voxel_to_patient((15, 30, 20))) < 4]
    assert near


def test_detections_report_a_nodule_once_and_rank_what_the_task_reports():
    """A second candidate just outside a nodule (its edge, 1.5 mm out) is the same finding:
    the task reports the nodule once, at every threshold; a separate structure is reported
    on its own; a candidate that segments to less than the minimum diameter is not reported."""
    from models.ct.blobs import Candidate
    from models.ct.nodules import NoduleInput, NodulePipeline
    from models.ct.volume import CTVolume

    hu, m, tube = _lung_with_vessel_and_nodule("solid", d=12.0)
    vol = CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3))
    lungs = np.ones(hu.shape, bool)
    edge = np.argwhere(ndimage.binary_dilation(m) & ~m)  # voxels just outside the nodule
    far = edge[np.argmax(edge[:, 2])]  # on its +x side, away from the vessel
    cands = [Candidate((24.0, 40.0, 44.0), 2.0, 6.0, 5.0),  # the nodule's centre
             Candidate(tuple(float(v) for v in far), 1.0, 2.0, 1.0),  # its edge
             Candidate((24.0, 20.0, 16.0), 1.0, 2.0, 1.0),  # on the vessel
             Candidate((10.0, 50.0, 50.0), 1.0, 1.0, 1.0)]  # plain lung: nothing to segment
    x = NoduleInput(vol, vol, lungs, tuple(slice(0, n) for n in hu.shape), None, cands)
    pipe = NodulePipeline(model=object())
    for score in ([9.0, 8.0, 1.0, 0.5], [8.0, 9.0, 1.0, 0.5]):  # either candidate of the nodule first
        kept = [i for i, *_ in pipe.detections(np.array(score), x)]
        assert sorted(kept) == [int(np.argmax(score[:2])), 2]
        assert kept[0] == int(np.argmax(score[:2]))  # in score order
    # at a threshold: only what scores at least that much, the same suppression
    assert [i for i, *_ in pipe.detections(np.array([9.0, 8.0, 1.0, 0.5]), x, threshold=5.0)] == [0]
    pipe.threshold = 0.5
    res = pipe.post_process(np.array([0.9, 0.8, 0.6, 0.55]), x)
    assert res["n_nodules"] == 2 and (res["_work_labels"][m] == 1).mean() > 0.8


def test_point_hits_follow_the_luna16_rule():
    """A point hits a nodule inside its mask or within its radius of its centre; the hit
    rule of the FROC, for candidates and for reported locations."""
    from training.ct.evaluate_nodules import point_hits

    labels = np.zeros((30, 30, 30), np.uint8)
    labels[10:14, 10:14, 10:14] = 1  # an irregular nodule: a 4-voxel cube ...
    labels[14:16, 12, 12] = 1  # ... with a thin spur
    specs = [{"diameter_mm": 9.0}]  # radius 4.5 mm = 3 voxels at 1.5 mm
    pts = [(15.0, 12.0, 12.0),  # on the spur, 3.4 voxels (5.1 mm) from the centre: in the mask
           (11.5, 11.5, 15.5),  # outside the mask, 4.0 voxels (6.0 mm) from the centre
           (11.5, 11.5, 13.9),  # outside the mask (rounds to x = 14), 2.4 voxels (3.6 mm) away
           (11.5, 11.5, 14.2),  # outside the mask, 2.7 voxels (4.0 mm) away
           (25.0, 25.0, 25.0)]
    got = point_hits(pts, labels, specs, (1.5, 1.5, 1.5))
    assert got == [1, None, 1, 1, None]


def test_run_case_scores_the_inserted_nodules_with_the_served_classifier():
    """The case runner shared by the evaluation, the threshold choice and the diagnostics:
    same seed, same case; every candidate scored; the inserted nodules are hit and reported."""
    from models.ct.volume import CTVolume
    from training.ct.data import LungVolume
    from training.ct.evaluate_nodules import run_case

    hu, lungs = _chest((48, 72, 72))
    lv = LungVolume(CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3), np.eye(3), {}), lungs)
    pipe = NodulePipeline(threads=1)
    a, b = run_case(pipe, lv, 7, n_nodules=2), run_case(pipe, lv, 7, n_nodules=2)
    assert a.specs == b.specs and np.array_equal(a.z, b.z)
    assert len(a.z) == len(a.x.candidates) == len(a.hits) and len(a.specs) == 2
    assert set(a.kept) <= set(range(len(a.z))) and len(a.reported_hits) == len(a.kept)
    assert list(a.kept) == sorted(a.kept, key=lambda j: -a.z[j])  # reported in descending score
    # both nodules are candidates, and the best candidate of each is what the task reports
    for k in (1, 2):
        js = [j for j, h in enumerate(a.hits) if h == k]
        assert js and max(js, key=lambda j: a.z[j]) in a.kept


def test_small_share_draws_small_nodules_and_keeps_the_old_stream():
    from training.ct.fpr_data import positive_diameter

    d = np.array([positive_diameter(np.random.default_rng(s), 1.0) for s in range(200)])
    assert d.min() >= 4.0 and d.max() <= 8.0
    mixed = np.array([positive_diameter(np.random.default_rng(s), 0.4) for s in range(400)])
    share = float(np.mean(mixed <= 8.0))  # 0.4 + 0.6 * ln2/ln7.5 = 0.60
    assert 0.52 < share < 0.68 and mixed.max() > 20.0
    # p_small = 0: the diameters of earlier versions (same seed, same value)
    for s in range(5):
        old = float(np.exp(np.random.default_rng(s).uniform(np.log(4.0), np.log(30.0))))
        assert positive_diameter(np.random.default_rng(s), 0.0) == old


def test_touches_finds_a_reported_nodule_within_the_radius_only():
    from models.ct.nodules import _touches

    lab = np.zeros((30, 30, 30), np.uint16)
    lab[10:14, 10:14, 10:14] = 1  # reported nodule, voxels 10..13
    sp = (1.5, 1.5, 1.5)
    assert _touches(lab, (11.0, 11.0, 11.0), 1.0, sp)  # inside
    assert _touches(lab, (11.0, 11.0, 16.0), 4.6, sp)  # 3 voxels (4.5 mm) beyond the edge
    assert not _touches(lab, (11.0, 11.0, 16.0), 4.4, sp)
    assert not _touches(lab, (25.0, 25.0, 25.0), 6.0, sp)
    assert _touches(lab, (16.0, 16.0, 16.0), 1.5 * np.sqrt(27) + 0.01, sp)  # diagonal: (13,13,13) is 3√3 voxels away
    assert not _touches(lab, (16.0, 16.0, 16.0), 1.5 * np.sqrt(27) - 0.01, sp)


def test_measurement_masks_change_sizes_not_which_findings_are_reported():
    """With ``measure_segmentation`` the task reports the same candidates (decided on the
    blob-radius masks) and measures each on its own segmentation; without it the reported
    label map is exactly the one that decided the findings."""
    from models.ct.blobs import INSCRIBED_OPENING, Candidate
    from models.ct.nodules import NoduleInput, NodulePipeline
    from models.ct.volume import CTVolume

    hu, m, tube = _lung_with_vessel_and_nodule("solid", d=12.0)
    vol = CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3))
    lungs = np.ones(hu.shape, bool)
    cands = [Candidate((24.0, 40.0, 44.0), 2.0, 6.0, 5.0), Candidate((24.0, 20.0, 16.0), 1.0, 2.0, 1.0)]
    x = NoduleInput(vol, vol, lungs, tuple(slice(0, n) for n in hu.shape), None, cands)
    prob = np.array([0.9, 0.6])
    plain = NodulePipeline(model=object(), threshold=0.5)
    decided = [lm.copy() for *_, lm in plain.detections(prob, x, 0.5)][-1]
    res0 = plain.post_process(prob, x)
    assert np.array_equal(res0["_work_labels"], decided)
    tight = NodulePipeline(model=object(), threshold=0.5, measure_segmentation=INSCRIBED_OPENING)
    assert [i for i, *_ in tight.detections(prob, x, 0.5)] == [i for i, *_ in plain.detections(prob, x, 0.5)]
    res1 = tight.post_process(prob, x)
    assert res1["n_nodules"] == res0["n_nodules"] == 2
    assert not np.array_equal(res1["_work_labels"], res0["_work_labels"])  # measured on other masks
    assert (res1["_work_labels"][m] == 1).mean() > 0.8  # still the nodule
    hull = closed_lungs(lungs, (1.5, 1.5, 1.5)) | lungs
    m0, sl0 = np.ones((2, 2, 2), bool), (slice(0, 2),) * 3
    assert plain.measurement_mask(x, 0, m0, sl0, hull) == (m0, sl0)  # off: the deciding mask itself
    taken = np.ones(hu.shape, np.uint16)  # every voxel already reported: falls back to the deciding mask
    assert tight.measurement_mask(x, 0, m0, sl0, hull, taken) == (m0, sl0)
    fine = NodulePipeline(model=object(), threshold=0.5, measure_segmentation=INSCRIBED_OPENING,
                          subvoxel_axes=True)
    res2 = fine.post_process(prob, x)
    assert np.array_equal(res2["_work_labels"], res1["_work_labels"])  # same masks, finer axes
    d1, d2 = res1["findings"][0]["mean_diameter_mm"], res2["findings"][0]["mean_diameter_mm"]
    assert abs(d2 - 12.0) < abs(d1 - 12.0)


def test_edge_gradient_falls_with_blur_and_not_with_coverage():
    from models.ct.reconstruction import edge_gradient

    hu, lungs = _chest((60, 64, 64))
    rng = np.random.default_rng(3)
    for _ in range(40):  # vessels: small soft-tissue blobs in the lung
        z, y, x = rng.integers(4, 56), rng.integers(14, 50), rng.integers(14, 50)
        hu[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 40.0
    sp = (1.5, 1.5, 1.5)
    sharp = edge_gradient(hu, lungs, sp)
    soft = edge_gradient(ndimage.gaussian_filter(hu, 1.0), lungs, sp)
    assert sharp > 1.3 * soft
    half = edge_gradient(hu[:30], lungs[:30], sp)  # half the lung: same reconstruction
    assert abs(half - sharp) < 0.1 * sharp
    assert np.isnan(edge_gradient(hu, np.zeros_like(lungs), sp))


def test_reconstruction_offset_interpolates_and_clips():
    from models.ct.reconstruction import ReconstructionOffset

    off = ReconstructionOffset(300.0, 240.0, 4.0)
    assert off(320.0) == 0.0 and off(300.0) == 0.0
    assert off(270.0) == pytest.approx(2.0)
    assert off(240.0) == pytest.approx(4.0) and off(100.0) == pytest.approx(4.0)
    assert off(float("nan")) == 0.0
    assert ReconstructionOffset.from_dict(off.to_dict()) == off
    with pytest.raises(ValueError):
        ReconstructionOffset(240.0, 300.0, 1.0)


def test_choose_delta_lifts_the_soft_class_when_its_nodules_score_lower():
    """Sharp studies: nodules at 8, false positives up to 5; soft studies: nodules at 3,
    false positives up to 0. Pooled, the soft nodules rank below the sharp false positives
    until the soft class is lifted by more than 2 (and not by 5 or more)."""
    from training.ct.reconstruction_offset import choose_delta, pooled_cpm

    cases = []
    for k in range(10):
        cases.append({"class": "full", "g": 300.0 + k, "n_nodules": 1,
                      "reported": [(8.0, 1), (5.0 - 0.1 * k, None), (1.0, None), (-2.0, None)]})
        cases.append({"class": "3mm", "g": 240.0 + k, "n_nodules": 1,
                      "reported": [(3.0, 1), (0.0 - 0.1 * k, None), (-3.0, None), (-6.0, None)]})
    off, cpms = choose_delta(cases)
    assert 2.0 < off.delta < 5.0
    assert cpms[off.delta] > cpms[0.0]
    assert pooled_cpm(cases, off)["cpm"] == pytest.approx(1.0)
    assert off.sharp_gradient == pytest.approx(304.5) and off.soft_gradient == pytest.approx(244.5)


def test_subvoxel_axes_halve_the_voxel_bias_on_inserted_nodules():
    """On nodules of known size inserted at 1.5 mm, axes measured 4 × finer at the
    segmentation's own HU level are closer to the true diameter than voxel extents."""
    from models.ct.blobs import INSCRIBED_OPENING
    from models.ct.findings import axes_mm, subvoxel_axes_mm
    from training.synthesis.ct_nodules import NoduleSpec, insert_nodule

    sp = (1.5, 1.5, 1.5)
    err_voxel, err_sub = [], []
    for d in (5.0, 7.0, 10.0, 15.0):
        for kind, level in (("solid", 30.0), ("ground-glass", -600.0)):
            rng = np.random.default_rng(int(d * 10))
            hu = (-850 + rng.normal(0, 20, (40, 48, 48))).astype(np.float32)
            c = (20.3, 24.2, 23.7)
            hu, _ = insert_nodule(hu, sp, NoduleSpec(c, d, kind, level, 0.0, (1.0, 1.0, 1.0), 0.0, 3), rng)
            info: dict = {}
            m, sl = segment_blob(hu, c, d / 2, sp, None, **INSCRIBED_OPENING, info=info)
            assert info["level"] is not None and -850 < info["level"] < level
            err_voxel.append(abs(np.mean(axes_mm(m, sp)) - d))
            err_sub.append(abs(np.mean(subvoxel_axes_mm(m, hu[sl], info["level"], sp)) - d))
    assert np.mean(err_sub) < 0.7 * np.mean(err_voxel)
    assert np.mean(err_sub) < 0.8
    info = {}
    empty, _ = segment_blob(np.full((20, 20, 20), -850.0, np.float32), (10.0, 10.0, 10.0), 3.0, sp, info=info)
    assert not empty.any() and info["level"] is None


def test_weight_average_is_the_mean_of_the_parameters():
    import torch

    from training.ct.networks import fpr_cnn, weight_average

    a, b = fpr_cnn(), fpr_cnn()
    avg = weight_average([a, b])
    k = "0.conv.weight"
    assert torch.allclose(avg[k], (a.state_dict()[k] + b.state_dict()[k]) / 2)
    c = fpr_cnn()
    c.load_state_dict(avg)  # a valid network of the same shape
    with pytest.raises(ValueError):
        weight_average([a, fpr_cnn(channels=(8, 16, 32))])


def test_reconstruction_warnings_use_the_validation_numbers():
    import json
    from pathlib import Path

    from models.ct import reconstruction as R

    rec = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results"
                      / "ct_nodule_reconstruction_offset.json").read_text())
    assert R.SHARP_EDGE_GRADIENT == pytest.approx(rec["classes"]["full"]["edge_gradient_median"], abs=0.05)
    assert R.SOFT_EDGE_GRADIENT == pytest.approx(rec["classes"]["3mm"]["edge_gradient_median"], abs=0.05)
    assert R.SHARP_CPM == pytest.approx(rec["classes"]["full"]["cpm_alone"], abs=0.0005)
    assert R.SOFT_CPM == pytest.approx(rec["classes"]["3mm"]["cpm_alone"], abs=0.0005)
    assert R.reconstruction_warnings(310.0, 1.0) == []
    soft = R.reconstruction_warnings(250.0, 1.0)
    assert [w["code"] for w in soft] == ["soft_reconstruction"] and "soft or thick" in soft[0]["message"]
    thick = R.reconstruction_warnings(310.0, 3.0)
    assert [w["code"] for w in thick] == ["thick_slices"] and "slices 3.0 mm thick" in thick[0]["message"]
    assert R.reconstruction_warnings(float("nan"), 1.5) == []
