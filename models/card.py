"""Model cards: the JSON description shipped next to every ONNX model.

A card names the model and its semantic version, the task, the input specification
(size, channels, normalisation), the outputs, the classes and their operating-point
thresholds, the training data, the measured metrics (with the data they were measured
on) and the sha256 of the weights, which :class:`models.registry.Registry` verifies at
load time.  Metrics are written by the evaluation code, never typed by hand.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import ModelCardError

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"

# semver.org 2.0.0, section 9-10 (pre-release and build metadata)
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_semver(version: str) -> bool:
    """True when ``version`` is a semantic version (semver.org 2.0.0)."""
    return isinstance(version, str) and _SEMVER.match(version) is not None


def semver_key(version: str) -> tuple:
    """Sort key giving semver precedence (semver.org 2.0.0 section 11).

    A release sorts after its pre-releases; build metadata is ignored.

    Raises
    ------
    ValueError
        When ``version`` is not a semantic version.
    """
    m = _SEMVER.match(version) if isinstance(version, str) else None
    if m is None:
        raise ValueError(f"not a semantic version (MAJOR.MINOR.PATCH): {version!r}")
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, ids)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def now_iso() -> str:
    """The current UTC time as ISO 8601 (seconds), for ``ModelCard.created``."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ModelCard:
    """Description of one model version (stored as ``card.json``).

    Attributes
    ----------
    name : str
        Registry name, lower case (``[a-z0-9._-]``), e.g. ``"cxr-findings"``.
    version : str
        Semantic version ``MAJOR.MINOR.PATCH[-pre][+build]``.
    task : str
        What the model does, e.g. ``"cxr-findings"``, ``"cxr-lung-segmentation"``.
    input : dict
        Input specification, e.g. ``{"name": "image", "size": 256, "channels": 1,
        "normalisation": "..."}``; ``size`` and ``channels`` are positive integers.
    outputs : dict
        Output name -> description (shape, meaning).
    classes : list of str
        Class names in output-channel order.
    thresholds : dict of str to float
        Operating points (probability thresholds), keyed by class (or e.g. ``"abnormality"``).
    training_data : str
        Plain description of what the model was trained on (real / synthetic).
    metrics : dict
        Measured metrics, each naming the data it was measured on.
    sha256 : str
        Hex sha256 of ``model.onnx``.
    created : str
        ISO 8601 timestamp.
    extra : dict
        Anything else (export details, parity results, latency ...).
    """

    name: str
    version: str
    task: str
    input: dict[str, Any]
    outputs: dict[str, Any]
    classes: list[str]
    thresholds: dict[str, float]
    training_data: str
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    created: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build and validate a card from a dict.

        Raises
        ------
        ModelCardError
            Naming the missing, unknown or invalid field.
        """
        if not isinstance(data, dict):
            raise ModelCardError(f"a model card must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelCardError(
                f"unknown model card field(s) {unknown}; put additional information under 'extra'",
                field=unknown[0],
            )
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        for name in required:
            if name not in data:
                raise ModelCardError(f"model card field '{name}' is missing", field=name)
        card = cls(**data)
        card.validate()
        return card

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelCard:
        """Read and validate ``card.json``.

        Raises
        ------
        ModelCardError
            When the file is missing, not JSON, or a field is invalid.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ModelCardError(f"cannot read model card {path}: {e}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelCardError(f"model card {path} is not valid JSON: {e}") from e
        try:
            return cls.from_dict(data)
        except ModelCardError as e:
            raise ModelCardError(f"{path}: {e}", field=e.field) from e

    def save(self, path: str | os.PathLike) -> None:
        """Validate and write the card as JSON (atomically: temporary file + rename)."""
        self.validate()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    # ---- validation --------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; raise :class:`ModelCardError` naming the first bad one."""
        def bad(fld: str, why: str) -> ModelCardError:
            return ModelCardError(f"model card field '{fld}' {why}", field=fld)

        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise bad("name", f"must be lower-case letters, digits, '.', '_' or '-', got {self.name!r}")
        if not is_semver(self.version):
            raise bad("version", f"must be a semantic version MAJOR.MINOR.PATCH, got {self.version!r}")
        if not isinstance(self.task, str) or not self.task:
            raise bad("task", "must be a non-empty string")
        if not isinstance(self.input, dict):
            raise bad("input", "must be an object, e.g. {\"size\": 256, \"channels\": 1, \"normalisation\": ...}")
        for key in ("size", "channels"):
            if key in self.input:
                v = self.input[key]
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise bad("input", f"'{key}' must be a positive integer, got {v!r}")
        if not isinstance(self.outputs, dict) or not self.outputs:
            raise bad("outputs", "must be a non-empty object (output name -> description)")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) and c for c in self.classes):
            raise bad("classes", "must be a list of non-empty strings")
        if len(set(self.classes)) != len(self.classes):
            raise bad("classes", "must not repeat a class")
        if not isinstance(self.thresholds, dict):
            raise bad("thresholds", "must be an object (class -> probability threshold)")
        for k, v in self.thresholds.items():
            if (not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float))
                    or not math.isfinite(v) or not 0.0 <= v <= 1.0):
                raise bad("thresholds", f"entry {k!r}: {v!r} must be a number in [0, 1]")
        if not isinstance(self.training_data, str) or not self.training_data.strip():
            raise bad("training_data", "must describe the training data (real/synthetic, sources)")
        if not isinstance(self.metrics, dict):
            raise bad("metrics", "must be an object")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise bad("sha256", f"must be 64 lower-case hex digits (sha256 of model.onnx), got {self.sha256!r}")
        try:
            _dt.datetime.fromisoformat(self.created)
        except (TypeError, ValueError):
            raise bad("created", f"must be an ISO 8601 date-time, got {self.created!r}") from None
        if not isinstance(self.extra, dict):
            raise bad("extra", "must be an object")
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ModelCardError(f"model card is not JSON-serialisable: {e}") from e
