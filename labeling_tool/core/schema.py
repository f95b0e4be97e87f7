"""Label schemas per task, read from configuration (``schemas.toml``)."""
from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from labeling_tool.core.errors import SchemaError

logger = logging.getLogger(__name__)

KINDS = ("box", "polygon", "mask", "label")


@dataclass(frozen=True)
class LabelClass:
    name: str
    display: str
    shortcut: str = ""
    color: str = "#ff0000"
    kinds: tuple[str, ...] = KINDS


@dataclass(frozen=True)
class LabelSchema:
    """The classes of one labelling task."""

    task: str
    title: str
    classes: tuple[LabelClass, ...]
    exclusive: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def get(self, name: str) -> LabelClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise SchemaError(f"class {name!r} is not in the {self.task} schema ({', '.join(self.names)})")

    def check(self, name: str, kind: str) -> None:
        """Raise :class:`SchemaError` unless ``name`` accepts annotations of ``kind``."""
        if kind not in self.get(name).kinds:
            raise SchemaError(f"class {name!r} does not take {kind} annotations (only {', '.join(self.get(name).kinds)})")


def _parse(data: dict, origin: str) -> dict[str, LabelSchema]:
    out: dict[str, LabelSchema] = {}
    for task, spec in (data.get("tasks") or {}).items():
        try:
            classes = tuple(
                LabelClass(c["name"], c.get("display", c["name"]), str(c.get("shortcut", "")), c.get("color", "#ff0000"),
                           tuple(c.get("kinds", KINDS)))
                for c in spec["classes"]
            )
        except (KeyError, TypeError) as e:
            raise SchemaError(f"{origin}: task {task!r} needs [[tasks.{task}.classes]] with a name each") from e
        for c in classes:
            bad = set(c.kinds) - set(KINDS)
            if bad:
                raise SchemaError(f"{origin}: class {c.name!r} has unknown kinds {sorted(bad)}; use {KINDS}")
        out[task] = LabelSchema(task, spec.get("title", task), classes, tuple(spec.get("exclusive", ())))
    return out


def load_schemas(path: str | os.PathLike | None = None) -> dict[str, LabelSchema]:
    """Schemas: packaged defaults, overridden per task by the user's file.

    The user's file is ``path``, else ``$MEDWS_LABEL_SCHEMAS``, else
    ``$XDG_CONFIG_HOME/medws/label_schemas.toml`` when it exists.
    """
    schemas = _parse(tomllib.loads(resources.files("labeling_tool.core").joinpath("schemas.toml").read_text()), "schemas.toml")
    if path is None:
        path = os.environ.get("MEDWS_LABEL_SCHEMAS")
    if path is None:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        candidate = Path(xdg) / "medws" / "label_schemas.toml"
        path = candidate if candidate.is_file() else None
    if path is not None:
        try:
            schemas.update(_parse(tomllib.loads(Path(path).read_text()), str(path)))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SchemaError(f"cannot read label schemas from {path}: {e}") from e
    return schemas


def load_schema(task: str = "cxr", path: str | os.PathLike | None = None) -> LabelSchema:
    """The schema of ``task``."""
    schemas = load_schemas(path)
    if task not in schemas:
        raise SchemaError(f"no label schema for task {task!r}; known: {', '.join(sorted(schemas))}")
    return schemas[task]
