"""The analysis pipeline on a local archive: routing, results, supersession,
idempotency, drafts, priorities and the outbox (real models, real DICOM objects)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node import samples
from dicom_node.analysis import AI_SOURCE_AE, Analyzer, analyze_study, claim_job, enqueue_prioritized
from dicom_node.archive import Archive
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.delivery import Delivery, Destinations
from dicom_node.jobs import JobQueue
from dicom_node.peers import PeerRegistry
from dicom_node.stability import StabilityMonitor
from tests.pipeline.conftest import BACKENDS, copy_as
from tests.results.sources import assert_valid, dsr2xml


def _objects(db: Database, study: str, state: str = "current") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in db.query("SELECT kind, sop_instance_uid FROM ai_objects WHERE study_uid = ? AND state = ? ORDER BY id",
                      (study, state)):
        out.setdefault(r["kind"], []).append(r["sop_instance_uid"])
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_chest_cr_gets_sr_seg_gsps_findings_and_draft(cxr_models, config: NodeConfig, db: Database,
                                                      chest_cr: Path, tmp_path: Path) -> None:
    archive = Archive(config, db)
    src = archive.store_file(chest_cr)
    peers = PeerRegistry(db)
    peers.add("pacs", "PACS", "127.0.0.1", 9)  # nothing listens: delivery must retry, then dead-letter
    Destinations(db).set("pacs", True)

    summary = analyze_study(config, src.study_uid)
    assert [(j["task"], j["state"]) for j in summary["jobs"]] == [("analyze", "done"), ("cxr", "done")]
    cxr_job = JobQueue(db).list(study_uid=src.study_uid)[1]
    from models.registry import Registry

    expected = {"cxr-lung", "cxr-lesions"} | ({"cxr-nodule"} if Registry().versions("cxr-nodule") else set())
    assert set(cxr_job.model_versions) == expected  # every model the result depends on
    timings = json.loads(db.query("SELECT timings FROM jobs WHERE id = ?", (cxr_job.id,))[0][0])
    assert timings["model_s"] > 0 and timings["objects_s"] > 0

    objs = _objects(db, src.study_uid)
    n_findings = len(summary["findings"])
    assert objs.get("sr") and len(objs["sr"]) == 1
    assert len(objs.get("seg", [])) == len(objs.get("gsps", [])) == (1 if n_findings else 0)
    # stored in the source study, indexed, as medws's own objects
    rows = {r["sop_instance_uid"]: r for r in archive.instances(study_uid=src.study_uid)}
    for uid in sum(objs.values(), []):
        assert rows[uid]["source_ae"] == AI_SOURCE_AE
    sr_ds = pydicom.dcmread(archive.absolute(rows[objs["sr"][0]]["path"]))
    assert sr_ds.StudyInstanceUID == src.study_uid and sr_ds.VerificationFlag == "UNVERIFIED"
    evidence = [i.ReferencedSOPInstanceUID for s in sr_ds.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence]
    assert evidence == [src.sop_instance_uid]
    if n_findings:
        seg_ds = pydicom.dcmread(archive.absolute(rows[objs["seg"][0]]["path"]))
        assert seg_ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID \
            == src.sop_instance_uid
        pr = pydicom.dcmread(archive.absolute(rows[objs["gsps"][0]]["path"]))
        assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID \
            == src.sop_instance_uid
    # every object passes dicom3tools' dciodvfy and DCMTK reads it
    for uid in sum(objs.values(), []):
        assert_valid(archive.absolute(rows[uid]["path"]))
    assert "UNVERIFIED" in dsr2xml(archive.absolute(rows[objs["sr"][0]]["path"]))
    # findings for the workstation, the draft linked to the SR
    frows = db.query("SELECT kind, model_name, data FROM findings WHERE study_uid = ?", (src.study_uid,))
    assert [(r["kind"], r["model_name"]) for r in frows] == [("cxr", "cxr-lesions")]
    assert len(json.loads(frows[0]["data"])["findings"]) == n_findings
    (rep,) = db.query("SELECT state, author, body FROM reports WHERE study_uid = ?", (src.study_uid,))
    body = json.loads(rep["body"])
    assert rep["state"] == "draft" and body["sr_sop_instance_uid"] == objs["sr"][0] and body["text"]
    # the study stays stable after our own objects were stored (no re-analysis churn)
    assert db.query("SELECT ai_status FROM studies WHERE study_uid = ?", (src.study_uid,))[0][0] == "done"

    # the outbox: one item per object; the peer is down -> retries -> dead letter with the error
    delivery = Delivery(db, "MEDWS", max_attempts=2, base_s=0.0)
    assert db.query("SELECT COUNT(*) FROM outbox WHERE peer = 'pacs' AND state = 'pending'")[0][0] == \
        sum(len(v) for v in objs.values())
    first = delivery.deliver_once()
    assert first.retried == sum(len(v) for v in objs.values()) and first.sent == 0
    second = delivery.deliver_once()
    assert second.dead == first.retried
    dead = db.query("SELECT attempts, last_error FROM outbox WHERE state = 'failed'")
    assert all(r["attempts"] == 2 and r["last_error"] for r in dead)
    from dicom_node.scp import node_status

    status = node_status(db)  # what `medws node status --json` prints
    assert status["outbox"]["failed"] == len(dead)
    assert [d["last_error"] for d in status["analysis"]["dead_letters"]] == [r["last_error"] for r in dead][::-1]
    assert status["analysis"]["destinations"] == [{"peer": "pacs", "ae_title": "PACS", "auto_send": True}]
    assert delivery.retry() == len(dead)

    # the same content again: nothing new (idempotent by content key)
    again = analyze_study(config, src.study_uid)
    assert len(again["jobs"]) == 2 and _objects(db, src.study_uid) == objs

    # a late instance: a second frontal image -> re-analysed, the earlier objects superseded
    late = copy_as(chest_cr, tmp_path / "late.dcm", SOPInstanceUID=generate_uid(), InstanceNumber="2")
    archive.store_file(late)
    later = analyze_study(config, src.study_uid)
    assert [j["task"] for j in later["jobs"]] == ["analyze", "cxr", "analyze", "cxr"]
    new = _objects(db, src.study_uid)
    old = _objects(db, src.study_uid, "superseded")
    assert old == objs and len(new["sr"]) == 1 and not set(sum(new.values(), [])) & set(sum(objs.values(), []))
    held = {r["sop_instance_uid"] for r in archive.instances(study_uid=src.study_uid)}
    assert not held & set(sum(objs.values(), [])), "superseded objects left in the archive"
    new_sr = pydicom.dcmread(archive.absolute(
        db.query("SELECT path FROM ai_objects WHERE sop_instance_uid = ?", (new["sr"][0],))[0][0]))
    assert new_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == objs["sr"][0]
    new_job = JobQueue(db).list(study_uid=src.study_uid)[-1]
    assert [r[0] for r in db.query("SELECT job_id FROM findings WHERE study_uid = ?", (src.study_uid,))] == \
        [new_job.id, new_job.id]  # one result per radiograph, none left from the earlier run
    assert len(db.query("SELECT 1 FROM reports WHERE study_uid = ?", (src.study_uid,))) == 1
    assert_valid(archive.absolute(db.query("SELECT path FROM ai_objects WHERE sop_instance_uid = ?",
                                           (new["sr"][0],))[0][0]))
    # outbox items of superseded objects that were never sent are withdrawn
    assert {r[0] for r in db.query("SELECT DISTINCT state FROM outbox WHERE sop_instance_uid IN (%s)" %
                                   ",".join("?" * len(sum(objs.values(), []))), sum(objs.values(), []))} \
        == {"superseded"}


def test_crash_between_store_and_commit_leaves_no_duplicate(cxr_models, config: NodeConfig, db: Database,
                                                            chest_cr: Path) -> None:
    archive = Archive(config, db)
    src = archive.store_file(chest_cr)
    StabilityMonitor(db, 0.0, hooks=[enqueue_prioritized]).check(now=10**10)
    analyzer = Analyzer(config, db)
    jobs = JobQueue(db)
    analyzer.execute(jobs.claim("w"))  # routing
    job = jobs.claim("w")
    assert job.task == "cxr"
    output = analyzer.tasks.get("cxr").run([archive.absolute(i["path"]) for i in analyzer._inputs(job)])
    stored, _ = analyzer._build_and_store(job, "cxr", output)  # ... and the worker dies here
    before = len(archive.instances(study_uid=src.study_uid))
    assert jobs.requeue_running() == 1
    analyzer.execute(jobs.claim("w2"))
    assert jobs.get(job.id).state == "done" and jobs.get(job.id).attempts == 2
    assert len(archive.instances(study_uid=src.study_uid)) == before
    assert sorted(sum(_objects(db, src.study_uid).values(), [])) == sorted(o["sop_instance_uid"] for o in stored)


def test_priorities_not_applicable_and_edited_drafts(cxr_models, config: NodeConfig, db: Database,
                                                     chest_cr: Path, tmp_path: Path) -> None:
    archive = Archive(config, db)
    # a STAT study is analysed first; its PACS priority is recorded, never changed
    routine = archive.store_file(chest_cr)
    stat = copy_as(chest_cr, tmp_path / "stat.dcm", StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                   SOPInstanceUID=generate_uid(), RequestedProcedurePriority="STAT")
    stat_uid = archive.store_file(stat).study_uid
    ct = [archive.store_file(samples.save(ds, tmp_path / f"ct{i}.dcm"))
          for i, ds in enumerate(samples.ct_series(3, size=64, seed=1))]
    StabilityMonitor(db, 0.0, hooks=[enqueue_prioritized]).check(now=10**10)
    jobs = JobQueue(db)
    first = jobs.claim("w")
    assert first.study_uid == stat_uid and first.priority == 100
    analyzer = Analyzer(config, db)
    analyzer.execute(first)
    while (job := jobs.claim("w")) is not None:
        analyzer.execute(job)
    prio = {r[0]: (r[1], r[2]) for r in db.query("SELECT study_uid, priority, ai_status FROM studies")}
    assert prio[stat_uid] == ("STAT", "done") and prio[routine.study_uid][1] == "done"
    # a 3-slice CT matches no task: recorded as not applicable, no job failed
    assert prio[ct[0].study_uid][1] == "not_applicable"
    assert jobs.counts()["failed"] == 0
    outcome = json.loads(db.query("SELECT outcome FROM jobs WHERE study_uid = ?", (ct[0].study_uid,))[0][0])
    assert "instance(s) < 20" in outcome["routing"]["not_applicable"]

    # a draft a radiologist edited is kept when the study is re-analysed
    db.execute("UPDATE reports SET author = 'dr.kim', body = ? WHERE study_uid = ?",
               (json.dumps({"text": "edited"}), routine.study_uid))
    late = copy_as(chest_cr, tmp_path / "late2.dcm", SOPInstanceUID=generate_uid())
    archive.store_file(late)
    summary = analyze_study(config, routine.study_uid)
    assert summary["report"] == "edited" and "radiologist edited" in \
        json.loads(db.query("SELECT outcome FROM jobs WHERE study_uid = ? ORDER BY id DESC", (routine.study_uid,))
                   [0][0])["report"]


def test_analyze_cli(cxr_models, config: NodeConfig, db: Database, chest_cr: Path) -> None:
    src = Archive(config, db).store_file(chest_cr)
    out = subprocess.run([sys.executable, "-m", "medws", "analyze", "--root", str(config.root), "--study",
                          src.study_uid, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ai_status"] == "done" and summary["report"]
    assert {o["kind"] for o in summary["objects"]} >= {"sr"}
    bad = subprocess.run([sys.executable, "-m", "medws", "analyze", "--root", str(config.root), "--study", "1.2.3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no study 1.2.3" in bad.stderr


@pytest.mark.parametrize("backend", BACKENDS)  # the CT tasks on PostgreSQL too
def test_low_dose_chest_ct_gets_a_denoised_series(config: NodeConfig, db: Database, tmp_path: Path) -> None:
    from dicom_node.tasks import TaskCache

    why = TaskCache().available("ct-denoise")
    if why:
        pytest.skip(why)
    archive = Archive(config, db)
    files = []
    for i, ds in enumerate(samples.ct_series(24, size=64, seed=5, patient_id="MEDWS-LDCT")):
        ds.CTDIvol = 1.4  # low dose (mGy)
        files.append(samples.save(ds, tmp_path / f"ld{i:02d}.dcm"))
    study = [archive.store_file(f) for f in files][0].study_uid
    summary = analyze_study(config, study)
    routed = [j for j in summary["jobs"] if j["task"] == "analyze"][0]["outcome"]["routing"]["tasks"]
    assert [t["task"] for t in routed] == ["ct-nodule", "ct-denoise"]
    job = [j for j in summary["jobs"] if j["task"] == "ct-denoise"][0]
    assert job["state"] == "done" and job["models"]
    derived = _objects(db, study)["derived"]
    assert len(derived) == 24
    rows = [r for r in archive.instances(study_uid=study) if r["sop_instance_uid"] in set(derived)]
    assert len({r["series_uid"] for r in rows}) == 1 and all(r["source_ae"] == AI_SOURCE_AE for r in rows)
    ds = pydicom.dcmread(archive.absolute(rows[0]["path"]))
    assert "DERIVED" in ds.ImageType and ds.StudyInstanceUID == study
    assert analyze_study(config, study)["jobs"] == summary["jobs"]  # same content: not again


@pytest.mark.parametrize("backend", BACKENDS)  # the CT tasks on PostgreSQL too
def test_gated_cardiac_ct_routes_to_calcium_scoring(config: NodeConfig, db: Database, shared_data: Path,
                                                    tmp_path: Path) -> None:
    """A gated non-contrast cardiac CT (real anatomy, contrast removed; models.ct) gets
    the Agatston SR and the calcium draft; the CT task's JSON maps onto the findings."""
    nifti = shared_data / "ct" / "totalseg" / "cardiac_crop" / "ct_cropped.nii.gz"
    if not nifti.is_file():
        pytest.skip(f"{nifti} missing")
    from models.ct.volume import read_nifti
    from training.synthesis.ct_calcium import decontrast_blood_pool
    from training.synthesis.ct_dicom import write_series

    vol = read_nifti(nifti)
    hu, _ = decontrast_blood_pool(vol.hu, seed=1)
    files = write_series(vol.with_array(hu), tmp_path / "cac", series_description="Calcium score 3.0 gated",
                         extra={"BodyPartExamined": "HEART", "CardiacSynchronizationTechnique": "PROSPECTIVE"})
    archive = Archive(config, db)
    study = [archive.store_file(f) for f in files][0].study_uid
    summary = analyze_study(config, study)
    assert [(j["task"], j["state"]) for j in summary["jobs"]] == [("analyze", "done"), ("cac", "done")]
    assert summary["findings"] and {f["label"] for f in summary["findings"]} == {"coronary_calcium"}
    assert "Agatston" in summary["report"] and "CAC-DRS" in summary["report"]
    (sr_path,) = [r[0] for r in db.query("SELECT path FROM ai_objects WHERE study_uid = ? AND kind = 'sr'", (study,))]
    assert_valid(archive.absolute(sr_path))


@pytest.mark.parametrize("backend", BACKENDS)  # the CT tasks on PostgreSQL too
def test_multiphase_liver_ct_routes_to_the_liver_task(config: NodeConfig, db: Database, shared_data: Path,
                                                      tmp_path: Path) -> None:
    """A four-phase abdominal CT (real liver, one synthetic lesion; models.ct) stored in the
    archive is routed to the liver task as one study; its findings carry per-phase HU and
    the SR is valid TID 1500."""
    if not (shared_data / "ct" / "totalseg").is_dir():
        pytest.skip("ct/totalseg missing")
    import numpy as np

    from training.ct.liver_data import liver_case, liver_train_volume
    from training.synthesis.ct_dicom import write_series

    lv = liver_train_volume()
    vols, mp = liver_case(lv, np.random.default_rng(99002), n_lesions=1, diameter_range=(22.0, 24.0))
    study_uid, files = generate_uid(), []
    for k, v in enumerate(vols):  # four series of one study, the phase named by the description
        files += write_series(v, tmp_path / f"s{k}", series_description=v.meta["series_description"],
                              study_uid=study_uid, series_number=k + 1, seed=k,
                              extra={"BodyPartExamined": "ABDOMEN"})  # General Series Laterality (2C) needs it
    archive = Archive(config, db)
    study = [archive.store_file(f) for f in files][0].study_uid
    summary = analyze_study(config, study)
    routed = [j for j in summary["jobs"] if j["task"] == "analyze"][0]["outcome"]["routing"]["tasks"]
    assert [t["task"] for t in routed] == ["liver"]
    job = [j for j in summary["jobs"] if j["task"] == "liver"][0]
    assert job["state"] == "done" and job["models"]
    assert {f["label"] for f in summary["findings"]} == {"liver_lesion"}
    stored = [f for r in db.query("SELECT data FROM findings WHERE study_uid = ?", (study,))
              for f in json.loads(r["data"])["findings"]]
    assert stored and all(f["type"] in ("cyst_like", "hcc_like", "hypoenhancing", "indeterminate_enhancing")
                          for f in stored)
    objects = _objects(db, study)
    assert set(objects) >= {"sr", "seg", "gsps"}  # outlines traced from the 3-D mask on each slice
    paths = dict(db.query("SELECT kind, path FROM ai_objects WHERE study_uid = ? AND state = 'current'", (study,)))
    assert_valid(archive.absolute(paths["sr"]))
    assert_valid(archive.absolute(paths["seg"]))
    assert_valid(archive.absolute(paths["gsps"]))
    # the SEG covers the inserted lesion, on the portal-venous series the findings were measured on
    from dicom_node.seg import read_segments

    seg = pydicom.dcmread(archive.absolute(paths["seg"]))
    refs = {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    pv = [pydicom.dcmread(f) for f in files if "portal" in pydicom.dcmread(f, stop_before_pixels=True).SeriesDescription.lower()]
    assert refs <= {str(d.SOPInstanceUID) for d in pv}
    (lesion_seg,) = read_segments(seg).values()
    assert lesion_seg.sum() > 100  # voxels of a 22-24 mm lesion on 1.5-3 mm slices


@pytest.mark.parametrize("backend", BACKENDS)  # the CT tasks on PostgreSQL too
def test_chest_ct_nodule_gets_sr_seg_and_gsps(config: NodeConfig, db: Database, shared_data: Path,
                                              tmp_path: Path) -> None:
    """A chest CT (real lungs, held-out region, one inserted 16 mm solid nodule) stored in the
    archive: ct-nodule's findings get a valid SR, SEG and GSPS, and the SEG covers the nodule."""
    nifti = shared_data / "ct" / "totalseg" / "aortic_crop" / "ct_cropped.nii.gz"
    if not nifti.is_file():
        pytest.skip(f"{nifti} missing")
    import numpy as np

    from dicom_node.seg import read_segments
    from models.ct.lungs import lung_mask
    from models.ct.volume import read_nifti
    from training.ct.data import NODULE_SPLIT_Z, LungVolume, sub_volume
    from training.synthesis.ct_dicom import write_series
    from training.synthesis.ct_nodules import NoduleSpec, insert_nodule, sample_centres

    ao = read_nifti(nifti)
    te = sub_volume(ao, NODULE_SPLIT_Z + 8, ao.shape[0])  # the held-out region
    lv = LungVolume(te, lung_mask(te.hu, te.spacing))
    rng = np.random.default_rng(99003)
    c = sample_centres(lv.lungs, te.spacing, 16.0, rng, 1)[0]
    hu, truth = insert_nodule(te.hu, te.spacing, NoduleSpec(tuple(c), 16.0, "solid", 30.0, seed=5), rng)
    files = write_series(te.with_array(hu), tmp_path / "chest", series_description="Chest",
                         extra={"BodyPartExamined": "CHEST"})
    archive = Archive(config, db)
    study = [archive.store_file(f) for f in files][0].study_uid
    summary = analyze_study(config, study)
    job = [j for j in summary["jobs"] if j["task"] == "ct-nodule"][0]
    assert job["state"] == "done" and job["models"]
    assert summary["findings"] and {f["label"] for f in summary["findings"]} == {"nodule"}
    paths = dict(db.query("SELECT kind, path FROM ai_objects WHERE study_uid = ? AND state = 'current'", (study,)))
    assert set(paths) >= {"sr", "seg", "gsps"}
    for kind in ("sr", "seg", "gsps"):
        assert_valid(archive.absolute(paths[kind]))
    # the SEG's nodule voxels overlap the inserted nodule (slices matched by SOP Instance UID)
    seg = pydicom.dcmread(archive.absolute(paths["seg"]))
    (masks,) = read_segments(seg).values()
    import highdicom as hd

    uids = [u for _, _, u in hd.seg.Segmentation.from_dataset(seg, copy=True).get_source_image_uids()]  # read_segments' order
    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    z_of = {u: k for k, u in enumerate(sorted(by_uid, key=lambda u: float(
        pydicom.dcmread(by_uid[u], stop_before_pixels=True).ImagePositionPatient[2])))}
    hits = sum(int((masks[i] & truth[z_of[u]]).sum()) for i, u in enumerate(uids) if u in z_of)
    assert hits > 0.5 * truth.sum()
