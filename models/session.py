"""ONNX Runtime sessions: CUDA provider when available, CPU otherwise.

Only this module (and the ``predict`` step of a pipeline through it) touches ONNX Runtime.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.errors import ModelError

logger = logging.getLogger(__name__)

THREADS_ENV = "MEDWS_ORT_THREADS"


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when CUDA is available, else CPU only."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    return providers + ["CPUExecutionProvider"]


def resolve_threads(threads: int | None) -> int:
    """Intra-op thread count: ``threads``, else env ``MEDWS_ORT_THREADS``, else 0 (ORT's default).

    Raises
    ------
    ModelError
        When the environment variable is not a non-negative integer.
    """
    if threads is not None:
        if threads < 0:
            raise ModelError(f"thread count must be >= 0 (0 = ONNX Runtime default), got {threads}")
        return int(threads)
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ModelError(f"{THREADS_ENV}={raw!r} is not an integer thread count") from None
    if value < 0:
        raise ModelError(f"{THREADS_ENV}={raw!r} must be >= 0")
    return value


class OrtModel:
    """One ONNX model loaded in an ONNX Runtime inference session.

    Parameters
    ----------
    onnx_path : path
        The ``.onnx`` file.
    threads : int, optional
        Intra-op threads (default: env ``MEDWS_ORT_THREADS``, else ORT's default).
    providers : sequence of str, optional
        Execution providers in priority order (default: :func:`default_providers`).

    Raises
    ------
    ModelError
        When the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model file not found: {self.path}")
        self.threads = resolve_threads(threads)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting of the intra-op threads after a run: the numpy pre/post-processing
        # around every predict (and other workers) need those cores (MEDWS_ORT_SPIN=1 restores it)
        opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("MEDWS_ORT_SPIN", "0"))
        wanted = list(providers) if providers is not None else default_providers()
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"ONNX Runtime cannot load {self.path}: {e}") from e
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self.input_names: list[str] = [i.name for i in self._session.get_inputs()]
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]
        self.providers: list[str] = list(self._session.get_providers())
        logger.info("loaded %s with %s (intra-op threads %s)", self.path.name, self.providers,
                    self.threads or "default")

    def input_shape(self, name: str | None = None) -> list[int | str | None]:
        """Declared shape of an input (symbolic dimensions as strings)."""
        return list(self._inputs[name or self.input_names[0]].shape)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; returns output name -> array.

        Raises
        ------
        ModelError
            When an input is missing/unknown or ONNX Runtime rejects it (shape, dtype).
        """
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self._inputs]
        if missing or unknown:
            raise ModelError(f"{self.path.name}: expected inputs {self.input_names}, "
                             f"missing {missing}, unknown {unknown}")
        feeds = {n: np.ascontiguousarray(a) for n, a in inputs.items()}
        try:
            outs = self._session.run(self.output_names, feeds)
        except Exception as e:
            shapes = {n: (a.shape, str(a.dtype)) for n, a in feeds.items()}
            raise ModelError(f"{self.path.name}: ONNX Runtime failed on inputs {shapes}: {e}") from e
        return dict(zip(self.output_names, outs, strict=True))

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, providers={self.providers}, threads={self.threads})"
