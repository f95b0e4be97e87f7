"""Background work off the GUI thread: QRunnable on the global QThreadPool, results by signals."""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from dicom_node.privacy import log_phi_enabled, phi

logger = logging.getLogger(__name__)


class WorkerSignals(QObject):
    started = Signal(str)
    progress = Signal(int, str)  # percent, text
    done = Signal(object)
    failed = Signal(str)
    finished = Signal()


class Worker(QRunnable):
    """Run ``fn(progress, *args)`` in the pool; ``progress(percent, text)`` reports by signal."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__()
        self.name = name
        self.fn = fn
        self.args = args
        self.signals = WorkerSignals()
        self.setAutoDelete(False)

    def run(self) -> None:  # runs in a pool thread
        self.signals.started.emit(self.name)
        try:
            result = self.fn(lambda pct, text="": self.signals.progress.emit(int(pct), str(text)), *self.args)
        except Exception as e:  # noqa: BLE001 - reported to the GUI, never raised into Qt
            # the message may name a study; it goes to the GUI, the log gets it only with MEDWS_LOG_PHI=1
            logger.error("%s failed: %s %s", self.name, type(e).__name__, phi(e))
            logger.debug("%s", traceback.format_exc() if log_phi_enabled() else "")
            self.signals.failed.emit(f"{self.name} failed: {e}")
        else:
            self.signals.done.emit(result)
        finally:
            self.signals.finished.emit()


def start(worker: Worker, pool: QThreadPool | None = None) -> Worker:
    (pool or QThreadPool.globalInstance()).start(worker)
    return worker
