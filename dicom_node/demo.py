"""``medws demo``: the node end to end on embedded defaults.

Initialises the root, starts the node in-process on a free port of 127.0.0.1, sends
it the sample studies with the SCU, waits until every study is stable (short quiet
period) and returns the node's status.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from dicom_node import samples, scu
from dicom_node.config import load_config, write_default_config
from dicom_node.errors import NodeError
from dicom_node.hooks import stable_hooks
from dicom_node.peers import Peer
from dicom_node.scp import Node, write_run_file

logger = logging.getLogger(__name__)

DEMO_SENDER_AE = "MEDWS-DEMO"


def run_demo(root: Path, quiet_period_s: float = 1.0, timeout_s: float = 120.0, ct_slices: int = 40,
             on_status: Callable[[dict[str, Any]], None] | None = None,
             serve_until: threading.Event | None = None) -> dict[str, Any]:
    """Run the demo; returns ``node status`` (also passed to ``on_status`` once the
    studies are stable).  With ``serve_until`` the node then keeps serving until that
    event is set."""
    root.mkdir(parents=True, exist_ok=True)
    write_default_config(root, ae_title="MEDWS", port=11112)
    config = load_config(root, overrides={"host": "127.0.0.1", "port": 0, "quiet_period_s": quiet_period_s})
    node = Node(config, hooks=stable_hooks(config))
    node.jobs.requeue_running()
    port = node.start()
    try:
        if not node.db.query("SELECT 1 FROM peers WHERE name = 'demo-sender'"):
            node.peers.add("demo-sender", DEMO_SENDER_AE, "127.0.0.1", 104)
        files = samples.write_samples(root / "samples", ct_slices=ct_slices)
        result = scu.send(Peer("self", config.ae_title, "127.0.0.1", port), DEMO_SENDER_AE, files)
        if result.failed:
            raise NodeError(f"{result.failed} of {len(files)} sample instances were refused; see the log")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            receiving = node.db.query("SELECT COUNT(*) FROM studies WHERE state = 'receiving'")[0][0]
            if receiving == 0:
                break
            time.sleep(0.2)
        else:
            raise NodeError("studies did not become stable in time")
        status = node.status()
        if on_status is not None:
            on_status(status)
        if serve_until is not None:
            write_run_file(config, port)
            print(f'{{"event": "listening", "ae_title": "{config.ae_title}", "host": "127.0.0.1", "port": {port}}}',
                  flush=True)
            from dicom_node.scp import wait_for_stop

            wait_for_stop(serve_until)
        return status
    finally:
        node.stop()
