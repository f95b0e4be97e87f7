"""Promotion and rollback of registry models, guarded by :mod:`training.promotion.gate`.

The active version is the registry's ``<dir>/<name>/active.json`` pointer, written by
:meth:`models.registry.Registry.set_active` (history kept for rollback).  Every gate
decision, accepted or refused, is written to ``<dir>/<name>/promotions/``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.card import semver_key
from models.errors import ModelError
from models.registry import Registry
from training.promotion.gate import DEFAULT_MARGIN, DEFAULT_N_BOOT, GateResult, compare

logger = logging.getLogger(__name__)


class PromotionError(Exception):
    """Promotion or rollback could not be carried out (the message says how to fix it)."""


def current_version(reg: Registry, name: str, candidate: str) -> str:
    """The version the candidate must beat: the active pointer, else the highest other version."""
    active = reg.active_version(name)
    if active is not None and active != candidate:
        return active
    others = [v for v in reg.versions(name) if v != candidate]
    if active == candidate:
        raise PromotionError(f"{name}@{candidate} is already the active version")
    if not others:
        raise PromotionError(f"{name} has no other installed version to compare {candidate} with; "
                             "the first version is activated with Registry.set_active")
    return sorted(others, key=semver_key)[-1]


def load_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """NPZ with ``y_true``, ``current``, ``candidate`` (N, C) and ``classes`` (C,)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["y_true"], z["current"], z["candidate"], [str(c) for c in z["classes"]]
    except (OSError, KeyError, ValueError) as e:
        raise PromotionError(f"{path}: need an NPZ with y_true, current, candidate and classes ({e})") from e


def score_locked_set(reg: Registry, name: str, versions: Sequence[str], locked_set: str | os.PathLike):
    """Labels and per-case scores of each version on the test split of a medws-dataset export."""
    from training.datasets.class_map import CLASSES
    from training.datasets.medws_export import DatasetFormatError, load_medws_export
    from training.promotion.scoring import locked_labels, score_records

    try:
        records = load_medws_export(locked_set, split="test")
    except DatasetFormatError as e:
        raise PromotionError(f"locked set: {e}") from e
    if not records:
        raise PromotionError(f"{locked_set} has no test-split images to compare on")
    entries = [reg.get(name, v) for v in versions]
    classes = [c for c in CLASSES if all(c in e.card.classes for e in entries)]
    y = locked_labels(records, classes)
    scores = []
    for e in entries:
        model = reg.session(name, e.card.version, threads=2)
        scores.append(score_records(model, records, classes, e.card.classes, int(e.card.input.get("size", 256))))
    return y, scores, classes


def promote(name: str, version: str, *, current: str | None = None, locked_set: str | None = None,
            predictions: str | None = None, margin: float | None = None, n_boot: int | None = None, seed: int = 0,
            report: str | None = None, dirs: list[str] | None = None) -> GateResult:
    """Run the gate and, when it accepts, make ``name@version`` the active version."""
    reg = Registry(dirs)
    try:
        reg.get(name, version)
        current = current or current_version(reg, name, version)
        reg.get(name, current)
        if predictions:
            y, cur, cand, classes = load_predictions(predictions)
        elif locked_set:
            y, (cur, cand), classes = score_locked_set(reg, name, [current, version], locked_set)
        else:
            raise PromotionError("give --locked-set or --predictions")
    except ModelError as e:
        raise PromotionError(str(e)) from e
    result = compare(y, cur, cand, classes, margin=DEFAULT_MARGIN if margin is None else margin,
                     n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot, seed=seed)
    result.meta = {"name": name, "candidate": version, "current": current,
                   "locked_set": str(locked_set) if locked_set else None,
                   "predictions": str(predictions) if predictions else None,
                   "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    result.save(reg.dirs[-1] / name / "promotions" / f"{version}-{stamp}.json")
    if report:
        result.save(report)
    if result.accepted:
        reg.set_active(name, version, note=f"promoted over {current}: {result.reason}")
        logger.info("%s@%s promoted over %s", name, version, current)
    else:
        logger.warning("%s@%s refused: %s", name, version, result.reason)
    return result


def rollback(name: str, to: str | None = None, dirs: list[str] | None = None) -> str:
    """Set the active version back to the one before the current (or to ``to``); returns it."""
    reg = Registry(dirs)
    try:
        active = reg.active_version(name)
        if to is None:
            if active is None:
                raise PromotionError(f"{name} has no active-version pointer; nothing to roll back")
            previous = None
            for entry in reversed(reg.pointer_history(name)):
                if entry.get("version") == active:
                    previous = entry.get("previous")
                    break
            if not previous:
                raise PromotionError(f"no version of {name} was active before {active}; use --to VERSION")
            to = previous
        reg.set_active(name, to, note=f"rollback from {active}")
    except ModelError as e:
        raise PromotionError(str(e)) from e
    return to
