"""``medws demo``: analyse the sample studies once they are stable and print the results."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class DemoAnalysis:
    """Starts the analysis service on the demo root when the samples are stable."""

    def __init__(self, root: Path, timeout_s: float = 600.0) -> None:
        self.root = Path(root)
        self.timeout_s = timeout_s
        self.service: Any = None

    def run_and_print(self) -> None:
        """Run every queued job, print one JSON line per study, then the node status."""
        from dicom_node.analysis import AnalysisService, study_summary
        from dicom_node.config import load_config
        from dicom_node.scp import node_status

        config = load_config(self.root)
        self.service = AnalysisService(config)
        self.service.start()
        if not self.service.wait_idle(self.timeout_s, outbox=False):
            logger.error("analysis of the sample studies did not finish in %.0f s", self.timeout_s)
        db = self.service.db
        for row in db.query("SELECT study_uid, study_description FROM studies ORDER BY study_uid"):
            s = study_summary(db, row["study_uid"])
            line = {"event": "analysis", "study": row["study_description"] or row["study_uid"],
                    "ai_status": s["ai_status"], "findings": s["findings"],
                    "objects": [o["kind"] for o in s["objects"] if o["state"] == "current"],
                    "not_applicable": next((j["outcome"].get("routing", {}).get("not_applicable")
                                            for j in s["jobs"] if j["task"] == "analyze"), None),
                    "unavailable": next((j["outcome"].get("unavailable") for j in s["jobs"]
                                         if j["task"] == "analyze" and j["outcome"].get("unavailable")), None),
                    "errors": [f"{j['task']}: {j['error']}" for j in s["jobs"] if j["state"] == "failed"],
                    "report": (s["report"] or "").splitlines()}
            print(json.dumps(line, ensure_ascii=False), flush=True)
        print(json.dumps(node_status(db), sort_keys=True), flush=True)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
