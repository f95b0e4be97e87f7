"""Typed, layered configuration of the DICOM node.

Layers, later wins: built-in defaults < ``<root>/medws.toml`` (table ``[node]``) <
environment variables ``MEDWS_<FIELD>`` (e.g. ``MEDWS_PORT=11112``) < command-line
overrides.  ``MEDWS_ROOT`` chooses the root when none is given.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dicom_node.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_FILE = "medws.toml"
DEFAULT_ROOT = "./medws-data"
DUPLICATE_POLICIES = ("keep_newest", "keep_first", "reject")


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one node; see ``docs/node.md`` for each field."""

    root: Path = field(default_factory=lambda: Path(DEFAULT_ROOT))
    ae_title: str = "MEDWS"
    host: str = "0.0.0.0"
    port: int = 11112
    workers: int = 1
    require_registered: bool = True
    quiet_period_s: float = 10.0
    max_instance_bytes: int = 2 * 1024**3
    max_pdu: int = 4 * 1024 * 1024
    duplicate_policy: str = "keep_newest"
    fsync: bool = True
    db_url: str = ""
    network_timeout_s: float = 60.0
    max_associations: int = 32
    event_driven_waits: bool = True
    storage_acceptor: bool = True
    monitor_port: int = 0
    monitor_host: str = "127.0.0.1"
    retention_days: float = 0.0
    max_archive_gb: float = 0.0
    retention_keep_unsigned: bool = True
    retention_interval_s: float = 3600.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""

    def __post_init__(self) -> None:
        if not 1 <= len(self.ae_title.strip()) <= 16 or "\\" in self.ae_title:
            raise ConfigError(f"ae_title {self.ae_title!r} must be 1-16 characters without backslash (PS3.5 AE VR)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is outside 0-65535")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if self.quiet_period_s < 0:
            raise ConfigError("quiet_period_s must be >= 0")
        if self.duplicate_policy not in DUPLICATE_POLICIES:
            raise ConfigError(f"duplicate_policy must be one of {DUPLICATE_POLICIES}, not {self.duplicate_policy!r}")
        if self.retention_days < 0 or self.max_archive_gb < 0 or self.retention_interval_s <= 0:
            raise ConfigError("retention_days and max_archive_gb must be >= 0 (0: off), retention_interval_s > 0")
        if not 0 <= self.monitor_port <= 65535:
            raise ConfigError(f"monitor_port {self.monitor_port} is outside 0-65535 (0: no monitoring endpoint)")
        if self.max_pdu != 0 and self.max_pdu < 4096:
            raise ConfigError("max_pdu must be 0 (unlimited) or >= 4096")

    @property
    def dicom_dir(self) -> Path:
        """Folder holding the stored files, ``<root>/dicom``."""
        return self.root / "dicom"

    @property
    def database_url(self) -> str:
        """The index URL: ``db_url`` or the embedded ``sqlite:///<root>/index.sqlite``."""
        return self.db_url or f"sqlite:///{(self.root / 'index.sqlite').resolve()}"

    @property
    def tls(self) -> bool:
        """Whether the listener speaks DICOM over TLS (``tls_cert`` set)."""
        return bool(self.tls_cert)

    def replace(self, **changes: Any) -> "NodeConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _coerce(name: str, value: Any) -> Any:
    kind = {"root": Path, "port": int, "monitor_port": int, "workers": int, "max_instance_bytes": int, "max_pdu": int,
            "max_associations": int, "quiet_period_s": float, "network_timeout_s": float,
            "retention_days": float, "max_archive_gb": float, "retention_interval_s": float,
            "retention_keep_unsigned": bool,
            "require_registered": bool, "fsync": bool, "event_driven_waits": bool, "storage_acceptor": bool}.get(name, str)
    try:
        if kind is bool and isinstance(value, str):
            low = value.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return low in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name}={value!r} is not a valid {kind.__name__}") from e


def default_root(env: Mapping[str, str] | None = None) -> Path:
    """``MEDWS_ROOT`` if set, else ``./medws-data``."""
    env = os.environ if env is None else env
    return Path(env.get("MEDWS_ROOT") or DEFAULT_ROOT)


def load_config(
    root: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Build the configuration from its layers.

    Parameters
    ----------
    root
        Archive root; ``None`` means ``MEDWS_ROOT`` or ``./medws-data``.
    overrides
        Command-line values; ``None`` values are ignored.
    env
        Environment (``os.environ`` by default).
    """
    env = os.environ if env is None else env
    root_path = Path(root) if root is not None else default_root(env)
    values: dict[str, Any] = {}
    cfg_file = root_path / CONFIG_FILE
    if cfg_file.is_file():
        try:
            data = tomllib.loads(cfg_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{cfg_file}: {e}; fix the file or delete it to use defaults") from e
        for key, value in data.get("node", {}).items():
            if key not in _FIELDS or key == "root":
                raise ConfigError(f"{cfg_file}: unknown setting [node].{key}")
            values[key] = _coerce(key, value)
    for key in _FIELDS:
        env_key = f"MEDWS_{key.upper()}"
        if key != "root" and env_key in env:
            values[key] = _coerce(key, env[env_key])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key}")
        values[key] = _coerce(key, value)
    values["root"] = root_path
    return NodeConfig(**values)


def write_default_config(root: Path, **settings: Any) -> Path:
    """Write ``<root>/medws.toml`` with ``settings`` unless the file exists."""
    path = root / CONFIG_FILE
    if path.exists():
        return path
    lines = ["# medws node settings; environment MEDWS_<NAME> and command-line options override these.", "[node]"]
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
