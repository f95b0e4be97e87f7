"""Worklist priority/status/filter logic and the review state."""
from __future__ import annotations

import pytest

from workstation.core import review, worklist
from workstation.core.worklist import WorklistRow


def row(uid, rank, status="AI ready", date="20260101", pid="P1", name="DOE^JANE", acc="A1", crit=False):
    return WorklistRow(uid, pid, name, acc, date, "CR", "", "", crit, status, rank, 0)


def test_ai_raises_but_never_lowers_priority():
    assert worklist.priority_rank("ROUTINE", True) == 0
    assert worklist.priority_rank("STAT", False) == 0
    assert worklist.priority_rank("URGENT", False) == 1
    assert worklist.priority_rank("URGENT", True) == 0
    assert worklist.priority_rank("STAT", True) == 0
    assert worklist.priority_rank("", False) == 2


def test_status_progression():
    assert worklist.status_of(False, []) == "new"
    assert worklist.status_of(True, []) == "AI ready"
    assert worklist.status_of(True, ["draft"]) == "draft"
    assert worklist.status_of(True, ["draft", "signed"]) == "signed"


def test_sort_and_filters():
    rows = [row("a", 2, date="20260105"), row("b", 0, crit=True), row("c", 2, date="20260107"),
            row("d", 0, status="signed")]
    assert [r.study_uid for r in worklist.sort_rows(rows)] == ["b", "d", "c", "a"]
    r = row("x", 2, pid="12345", name="HONG^GILDONG", acc="ACC99")
    assert worklist.matches(r, "hong gil") and worklist.matches(r, "acc99") and worklist.matches(r, "234")
    assert not worklist.matches(r, "kim")
    assert worklist.matches(r, status="AI ready") and not worklist.matches(r, status="signed")


def test_critical_in():
    assert worklist.critical_in({"findings": [{"label": "pneumothorax"}]})
    assert not worklist.critical_in({"findings": [{"label": "nodule_mass"}]})


def make_state():
    f = {"label": "nodule_mass", "probability": 0.8, "box": [10, 10, 30, 50], "laterality": "right",
         "model": {"name": "cxr", "version": "1.0.0"}, "id": "f1"}
    return review.ReviewState([review.item_from_finding(f, 1, (0.5, 0.5))], spacing=(0.5, 0.5))


def test_review_actions_record_decisions():
    st = make_state()
    seen = []
    st.subscribe(seen.append)
    assert st.items[0].size_mm == 20.0 and st.items[0].status == "pending"
    d = st.accept("f1", "drkim")
    assert d.action == "accept" and d.before["status"] == "pending" and d.after["status"] == "accepted"
    assert d.ai["probability"] == 0.8 and d.ai["model"]["version"] == "1.0.0" and d.user == "drkim" and d.at
    d = st.edit("f1", "drkim", box=[10, 10, 50, 30])
    assert st.items[0].size_mm == 20.0 and d.before["box"] == [10.0, 10.0, 30.0, 50.0]
    d = st.edit("f1", "drkim", contour=[[0, 0], [40, 0], [40, 10]])
    assert st.items[0].box == [0, 0, 40, 10] and st.items[0].size_mm == 20.0
    st.reject("f1", "drkim")
    d = st.add("drkim", "pneumothorax", box=[1, 1, 11, 21], laterality="left")
    added = st.get(d.finding_id)
    assert added.source == "manual" and added.status == "accepted" and d.ai == {} and added.number == 2
    assert [x.action for x in seen] == ["accept", "edit", "edit", "reject", "add"]
    with pytest.raises(review.ReviewError):
        st.edit("f1", "drkim", box=[5, 5, 1, 1])
    with pytest.raises(review.ReviewError):
        st.accept("nope", "drkim")


def test_laterality_from_position():
    pa = {"right": "L", "left": "R", "top": "H", "bottom": "F"}
    assert review.laterality_from_position(900, 1024, pa) == "left"
    assert review.laterality_from_position(100, 1024, pa) == "right"
    assert review.laterality_from_position(100, 1024, None) is None


def test_query_counts_findings_in_sql(tmp_path):
    import json

    from workstation.core.store import ReadingStore
    store = ReadingStore.open(tmp_path)
    now = 1.0
    store.db.execute("INSERT INTO patients (patient_id, patient_name) VALUES ('P1', 'DOE^JANE')")
    for uid, prio_label in (("1.1", "nodule_mass"), ("1.2", "pneumothorax"), ("1.3", None)):
        store.db.execute("INSERT INTO studies (study_uid, patient_id, accession_number, study_date, modalities) "
                         "VALUES (?, 'P1', ?, '20260101', 'CR')", (uid, f"A{uid}"))
        if prio_label:
            compact = json.dumps({"findings": [{"label": prio_label}, {"label": "consolidation"}]},
                                 separators=(",", ":"))
            store.put_analysis_result(uid, json.loads(compact))
            store.db.execute("INSERT INTO findings (study_uid, kind, data, created_at) VALUES (?, 'cxr', ?, ?)",
                             (uid, compact, now))
    rows = {r.study_uid: r for r in store.worklist()}
    assert rows["1.2"].ai_critical and rows["1.2"].rank == 0 and rows["1.2"].findings == 4
    assert not rows["1.1"].ai_critical and rows["1.1"].findings == 4 and rows["1.1"].status == "AI ready"
    assert rows["1.3"].findings == 0 and rows["1.3"].status == "new"
    assert [r.study_uid for r in store.worklist()][0] == "1.2"
    assert [r.study_uid for r in store.worklist("a1.1")] == ["1.1"]
    store.close()


def test_pacs_priority_from_headers_and_ai_never_lowers(tmp_path):
    import tempfile
    from pathlib import Path

    from pydicom.dataset import Dataset

    from dicom_node import samples
    from workstation.core import demo
    from workstation.core.store import ReadingStore
    store = ReadingStore.open(tmp_path)
    uids = {}
    for name, prio, crit in (("stat", "STAT", False), ("urgent_crit", "URGENT", True), ("plain", None, False)):
        ds = samples.dx_chest(size=64, seed=len(uids), patient_id=f"P-{name}")
        if prio:
            req = Dataset()
            req.RequestedProcedurePriority = prio
            ds.RequestAttributesSequence = [req]
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "x.dcm"
            ds.save_as(p, enforce_file_format=True)
            store.archive.store_file(p)
        if crit:
            demo.put_result(store, ds, [demo.Finding("pneumothorax", 0.9, box=(1, 1, 9, 9), laterality="left",
                                                     image=demo.ImageRef.from_dataset(ds))])
        uids[name] = str(ds.StudyInstanceUID)
    rows = {r.study_uid: r for r in store.worklist()}
    assert rows[uids["stat"]].rank == 0 and rows[uids["stat"]].pacs_priority == "STAT"
    assert rows[uids["urgent_crit"]].rank == 0 and rows[uids["urgent_crit"]].ai_critical
    assert rows[uids["plain"]].rank == 2
    assert store.worklist()[-1].study_uid == uids["plain"]
    assert len(store.db.query("SELECT * FROM study_priority")) == 3  # read once, cached
    store.close()


def test_a_finding_names_its_own_model():
    """A nodule/mass from the fine-grid model carries ``model`` = cxr-nodule in the result
    JSON; the review item (panel column, signed SR) names it, not the result's model."""
    study_model = {"name": "cxr-lesions", "version": "0.5.0"}
    nodule = {"label": "nodule_mass", "probability": 0.9, "box": [10, 10, 30, 30], "laterality": "right",
              "model": {"name": "cxr-nodule", "version": "1.0.0"}}
    other = {"label": "consolidation", "probability": 0.8, "box": [40, 40, 90, 90], "laterality": "left"}
    a = review.item_from_finding(nodule, 1, (0.5, 0.5), study_model)
    b = review.item_from_finding(other, 2, (0.5, 0.5), study_model)
    assert (a.model_name, a.model_version) == ("cxr-nodule", "1.0.0")
    assert (b.model_name, b.model_version) == ("cxr-lesions", "0.5.0")
