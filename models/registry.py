"""Registry of ONNX models with their model cards.

Layout of every registry directory::

    <dir>/<name>/<version>/model.onnx
    <dir>/<name>/<version>/card.json
    <dir>/<name>/active.json          # optional pointer: {"version": ..., "history": [...]}

Directories are searched in order: the package's ``models/zoo`` first, then each entry
of env ``MEDWS_MODELS_DIR`` (``os.pathsep``-separated).  When the same name and version
exist in several directories the later directory wins.  ``get(name)`` returns the
version named by the ``active.json`` pointer of the latest directory that has one,
otherwise the highest semantic version.  Promotion and rollback tools change the
pointer with :meth:`Registry.set_active` (atomic rename), keeping a history.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.card import CARD_FILE, MODEL_FILE, ModelCard, now_iso, semver_key, sha256_file
from models.errors import ModelCardError, ModelError, ModelIntegrityError, ModelNotFoundError

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "MEDWS_MODELS_DIR"
ACTIVE_FILE = "active.json"
PACKAGE_ZOO = Path(__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class ModelEntry:
    """One model version found in a registry directory."""

    card: ModelCard
    onnx_path: Path

    @property
    def directory(self) -> Path:
        """The ``<dir>/<name>/<version>`` folder."""
        return self.onnx_path.parent

    @property
    def card_path(self) -> Path:
        return self.onnx_path.parent / CARD_FILE

    def verify(self) -> None:
        """Check the weights' sha256 against the card.

        Raises
        ------
        ModelIntegrityError
            When they differ.
        """
        actual = sha256_file(self.onnx_path)
        if actual != self.card.sha256:
            raise ModelIntegrityError(str(self.onnx_path), self.card.sha256, actual)


def default_dirs() -> list[Path]:
    """``[models/zoo]`` followed by the directories in env ``MEDWS_MODELS_DIR``."""
    dirs = [PACKAGE_ZOO]
    for part in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    return dirs


class Registry:
    """Find, list and load models.

    Parameters
    ----------
    dirs : list of paths, optional
        Registry directories in increasing precedence (default: :func:`default_dirs`).
    """

    def __init__(self, dirs: list[str | os.PathLike] | None = None) -> None:
        self.dirs: list[Path] = [Path(d) for d in dirs] if dirs is not None else default_dirs()

    # ---- discovery ---------------------------------------------------------------
    def _scan(self) -> dict[tuple[str, str], ModelEntry]:
        found: dict[tuple[str, str], ModelEntry] = {}
        for root in self.dirs:
            if not root.is_dir():
                continue
            for name_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                for ver_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
                    card_path, onnx_path = ver_dir / CARD_FILE, ver_dir / MODEL_FILE
                    if not card_path.is_file():
                        continue
                    try:
                        card = ModelCard.load(card_path)
                    except ModelCardError as e:
                        logger.warning("skipping %s: %s", ver_dir, e)
                        continue
                    if (card.name, card.version) != (name_dir.name, ver_dir.name):
                        logger.warning("skipping %s: card says %s %s; the folder must be <name>/<version>",
                                       ver_dir, card.name, card.version)
                        continue
                    if not onnx_path.is_file():
                        logger.warning("skipping %s: %s is missing", ver_dir, MODEL_FILE)
                        continue
                    found[(card.name, card.version)] = ModelEntry(card=card, onnx_path=onnx_path)
        return found

    def list(self) -> list[ModelCard]:
        """Every valid model version, sorted by name then semantic version."""
        entries = self._scan().values()
        return [e.card for e in sorted(entries, key=lambda e: (e.card.name, semver_key(e.card.version)))]

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, lowest to highest."""
        return sorted((v for (n, v) in self._scan() if n == name), key=semver_key)

    def active_version(self, name: str) -> str | None:
        """Version pinned by the ``active.json`` pointer (latest directory wins), or None."""
        for root in reversed(self.dirs):
            pointer = root / name / ACTIVE_FILE
            if pointer.is_file():
                data = _read_pointer(pointer)
                version = data.get("version")
                if not isinstance(version, str):
                    raise ModelError(f"{pointer}: 'version' missing; set it with Registry.set_active")
                return version
        return None

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """The entry of ``name`` at ``version`` (default: the active pointer, else the highest version).

        Raises
        ------
        ModelNotFoundError
            When no such model/version exists in any registry directory.
        """
        entries = self._scan()
        if version is None:
            version = self.active_version(name)
            if version is not None and (name, version) not in entries:
                raise ModelNotFoundError(
                    f"model {name!r}: active pointer names version {version} which is not installed "
                    f"in {[str(d) for d in self.dirs]}; roll back or reinstall it")
        if version is None:
            versions = sorted((v for (n, v) in entries if n == name), key=semver_key)
            if not versions:
                known = sorted({n for (n, _) in entries})
                raise ModelNotFoundError(f"no model named {name!r} in {[str(d) for d in self.dirs]}; "
                                         f"known models: {known}")
            version = versions[-1]
        try:
            return entries[(name, version)]
        except KeyError:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; installed: {self.versions(name)}") from None

    def session(self, name: str, version: str | None = None, threads: int | None = None,
                providers: list[str] | None = None):
        """Load the model in ONNX Runtime after verifying its sha256.

        Returns
        -------
        models.session.OrtModel

        Raises
        ------
        ModelIntegrityError
            When the weights do not match the card.
        """
        return self.load(name, version, threads, providers)[0]

    def load(self, name: str, version: str | None = None, threads: int | None = None,
             providers: list[str] | None = None):
        """Like :meth:`session`, and also return the card of the version that was loaded
        (one resolution of the active version, so session and card always agree).

        Returns
        -------
        tuple[models.session.OrtModel, ModelCard]
        """
        from models.session import OrtModel

        entry = self.get(name, version)
        entry.verify()
        return OrtModel(entry.onnx_path, threads=threads, providers=providers), entry.card

    # ---- promotion / rollback support ------------------------------------------
    def set_active(self, name: str, version: str, directory: str | os.PathLike | None = None,
                   note: str = "") -> Path:
        """Pin ``name`` to ``version`` by writing ``<directory>/<name>/active.json`` atomically.

        The previous pointer value is appended to the file's ``history`` so a rollback
        tool can restore it.  ``directory`` defaults to the last registry directory.

        Raises
        ------
        ModelNotFoundError
            When that version is not installed.
        """
        self.get(name, version)
        root = Path(directory) if directory is not None else self.dirs[-1]
        pointer = root / name / ACTIVE_FILE
        data: dict[str, Any] = _read_pointer(pointer) if pointer.is_file() else {}
        history = list(data.get("history", []))
        history.append({"version": version, "at": now_iso(), "previous": data.get("version"), "note": note})
        new = {"version": version, "updated": history[-1]["at"], "history": history}
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_name(ACTIVE_FILE + ".tmp")
        tmp.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, pointer)
        logger.info("model %s: active version set to %s in %s", name, version, root)
        return pointer

    def rollback(self, name: str, directory: str | os.PathLike | None = None, note: str = "rollback") -> str:
        """Point ``name`` back at the version active before the last change; returns it.

        Raises
        ------
        ModelError
            When the pointer has no previous version to return to.
        """
        history = self.pointer_history(name, directory)
        previous = history[-1].get("previous") if history else None
        if not previous:
            raise ModelError(f"model {name!r}: no earlier active version recorded to roll back to")
        self.set_active(name, previous, directory, note=note)
        return previous

    def pointer_history(self, name: str, directory: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """History entries of the pointer in ``directory`` (default: the last registry directory)."""
        root = Path(directory) if directory is not None else self.dirs[-1]
        pointer = root / name / ACTIVE_FILE
        return list(_read_pointer(pointer).get("history", [])) if pointer.is_file() else []

    def clear_active(self, name: str, directory: str | os.PathLike | None = None) -> None:
        """Remove the pointer so ``get(name)`` falls back to the highest version."""
        root = Path(directory) if directory is not None else self.dirs[-1]
        (root / name / ACTIVE_FILE).unlink(missing_ok=True)


def _read_pointer(pointer: Path) -> dict[str, Any]:
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read active-version pointer {pointer}: {e}") from e
    if not isinstance(data, dict):
        raise ModelError(f"{pointer}: must hold a JSON object with 'version'")
    return data
