"""The reading workflow on a PostgreSQL index: worklist, review decisions, draft, signing,
addendum and the outbox rows they queue (the SQL the workstation adds to the node's)."""
from __future__ import annotations

import pytest

from tests.support.postgres import postgres_server  # noqa: F401  (session fixture)
from workstation.core import demo, signing
from workstation.core.store import ReadingStore
from workstation.core.users import UserStore


@pytest.fixture
def pg_root(tmp_path, postgres_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MEDWS_DB_URL", postgres_server.create_database())
    root = tmp_path / "root"
    return root, demo.build(root, with_ct=False, extra_routine=1)


def test_review_sign_and_addendum_on_postgresql(pg_root):
    root, studies = pg_root
    store = ReadingStore.open(root)
    try:
        assert store.db.dialect == "postgresql"
        rows = {r.study_uid: r for r in store.worklist()}
        assert set(rows) == {studies.chest_uid, *studies.extra}
        state = store.review_state(studies.chest_uid, lambda _s: (0.2, 0.2))
        state.subscribe(lambda d: store.save_decision(studies.chest_uid, d, state.get(d.finding_id)))
        by = {it.label: it for it in state.items}
        state.accept(by["pneumothorax"].id, "drpark")
        for label in ("pleural_effusion", "nodule_mass", "consolidation"):
            state.reject(by[label].id, "drpark")
        draft_id = store.save_draft_text(studies.chest_uid, "Small right apical pneumothorax.", "drpark")
        assert store.report(studies.chest_uid).report_id == draft_id
        users = UserStore.for_root(root)
        users.add("drpark", "radiologist", "pg-pass-1234", "Park^Soyeon")
        text = "Small right apical pneumothorax. Discussed with Dr Han (ward 7) by phone at 14:05."
        res = signing.sign(store, users, studies.chest_uid, "drpark", "pg-pass-1234", text, state.items)
        signed = store.report(studies.chest_uid)
        assert signed.state == "signed" and signed.report_id == res.report_id != draft_id
        add = signing.addendum(store, users, studies.chest_uid, "drpark", "pg-pass-1234",
                               "Addendum: apical pneumothorax unchanged on review.", state.items)
        assert add.report_id > res.report_id
        states = [r["state"] for r in store.db.query(
            "SELECT state FROM reports WHERE study_uid = ? ORDER BY id", (studies.chest_uid,))]
        assert states[-2:] == ["signed", "addendum"]
        decisions = store.db.query("SELECT status FROM finding_reviews WHERE study_uid = ?", (studies.chest_uid,))
        assert sorted(r["status"] for r in decisions) == ["accepted", "rejected", "rejected", "rejected"]
        assert {r.study_uid: r.status for r in store.worklist()}[studies.chest_uid] == "signed"
    finally:
        store.close()
