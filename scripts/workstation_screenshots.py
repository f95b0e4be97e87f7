"""Make the workstation screenshots in ``docs/images/`` with ``medws workstation --screenshot``.

The archive is filled by the real analysis pipeline (``dicom_node.analysis.analyze_study``
with the installed models), nothing is planted:

* an NIH ChestX-ray14 radiograph (``00002846_013.png``, NIH labels consolidation, effusion,
  infiltration, pneumonia) wrapped as DX: ``cxr-lesions`` finds consolidation on both sides
  at its shipped operating point;
* two more NIH radiographs: ``00009507_002.png`` (marked STAT; consolidation found) and
  ``00001280_004.png`` (NIH "No Finding"; nothing found);
* the real SIIM-ACR CR sample (what the shipped models find on it is in the JSON written beside the images);
* the real TotalSegmentator CT (20 slices), marked low dose (CTDIvol 1.4 mGy): routed to
  ``ct-nodule`` (no nodule found) and ``ct-denoise`` (a derived denoised series).

A radiologist's review is then recorded on the NIH study (the first finding accepted, the
second rejected; the AI draft left as it is, so the live QA flags the rejected finding
that the draft still mentions), and three screens are rendered: the worklist, the chest
reading screen and the CT with original | denoised side by side.  Reads ../shared/data
(``MEDWS_SHARED_DATA`` overrides).

    python scripts/workstation_screenshots.py [--out docs/images]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_CR = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NIH_IMAGE = "images/00002846_013.png"
NIH_MORE = (("images/00009507_002.png", "STAT"), ("images/00001280_004.png", ""))  # consolidation; "No Finding"
CT_SERIES = "ct/totalseg/dicom_series"


def _model_of(finding: dict, row) -> str:
    """The model that produced one finding: its own ``model`` (e.g. cxr-nodule), else the result's."""
    m = finding.get("model") or {"name": row["model_name"], "version": row["model_version"]}
    return f"{m['name']} {m['version']}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = ap.parse_args()
    import pydicom

    from workstation.core import demo
    from workstation.core.store import ReadingStore
    from workstation.core.study import load_study_files

    shared = Path(os.environ.get("MEDWS_SHARED_DATA", REPO.parent / "shared" / "data"))
    nih = shared / "cxr" / "nih"
    rec_all = {r["file"]: r for r in json.loads((nih / "labels.json").read_text())}
    rec = rec_all[NIH_IMAGE]
    chest = demo.nih_as_dicom(nih / NIH_IMAGE, rec, patient_id="NIH-2846")
    chest.PatientName, chest.AccessionNumber = "ANON^NIH", "ACC0001"
    more = []
    for i, (name, priority) in enumerate(NIH_MORE):
        ds = demo.nih_as_dicom(nih / name, rec_all[name], patient_id=f"NIH-{rec_all[name]['patient_id']}")
        ds.PatientName, ds.AccessionNumber = f"ANON^NIH{i + 2}", f"ACC01{i}"
        if priority:
            ds.RequestedProcedurePriority = priority
        more.append([ds])
    siim = pydicom.dcmread(shared / SHARED_CR)
    siim.PatientName, siim.PatientID, siim.AccessionNumber = "ANON^SIIM", "SIIM-0001", "ACC0002"
    ct = [pydicom.dcmread(p) for p in sorted((shared / CT_SERIES).glob("*.dcm"))]
    ct_study, ct_series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for ds in ct:
        ds.CTDIvol = 1.4  # mark the scan low dose: the pipeline routes it to ct-denoise as well
        ds.BodyPartExamined = "CHEST"
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "ANON^TOTALSEG", "TS-0001", "ACC0003"
        if not getattr(ds, "StudyInstanceUID", ""):  # emptied by the publisher's anonymisation
            ds.StudyInstanceUID = ct_study
        if not getattr(ds, "SeriesInstanceUID", ""):
            ds.SeriesInstanceUID = ct_series
        for kw, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not getattr(ds, kw, ""):  # the anonymised sample keeps these in its file meta only
                setattr(ds, kw, getattr(ds.file_meta, meta))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        studies = [[chest], [siim], ct, *more]
        uids = demo.build_analyzed(root, studies)
        chest_uid, ct_uid = uids[0], uids[2]
        store = ReadingStore.open(root)
        found = []  # what the pipeline found, written next to the images (docs cite this file, not typed numbers)
        for uid, dss in zip(uids, studies):
            jobs = store.db.query("SELECT task, state, error, model_versions FROM jobs WHERE study_uid = ? ORDER BY id",
                                  (uid,))
            rows = store.db.query("SELECT model_name, model_version, data FROM findings WHERE study_uid = ?", (uid,))
            found.append({"study": str(dss[0].get("AccessionNumber", "")), "patient_id": str(dss[0].PatientID),
                          "jobs": [{"task": j["task"], "state": j["state"], "error": j["error"],
                                    "models": json.loads(j["model_versions"] or "{}")} for j in jobs],
                          "findings": [{"model": _model_of(f, r), "label": f.get("label"),
                                        "probability": f.get("probability"), "laterality": f.get("laterality")}
                                       for r in rows for f in json.loads(r["data"]).get("findings", [])]})
        loaded = load_study_files(store.study_paths(chest_uid))
        state = store.review_state(chest_uid, lambda _s: loaded.series[0].spacing)
        print(json.dumps([{"label": it.label, "p": it.probability, "side": it.laterality,
                           "model": f"{it.model_name} {it.model_version}"} for it in state.items]))
        state.subscribe(lambda d: store.save_decision(chest_uid, d, state.get(d.finding_id)))
        if state.items:
            state.accept(state.items[0].id, "drkim")
        for it in state.items[1:2]:
            state.reject(it.id, "drkim")
        store.close()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "workstation_screenshots.json").write_text(json.dumps(found, indent=1) + "\n")
        shots = [("workstation_worklist.png", []), ("workstation_chest.png", ["--open", chest_uid]),
                 ("workstation_ct.png", ["--open", ct_uid, "--side-by-side"])]
        for name, extra in shots:
            cmd = [sys.executable, "-m", "medws", "workstation", "--root", str(root), *extra,
                   "--screenshot", str(args.out / name)]
            subprocess.run(cmd, check=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
