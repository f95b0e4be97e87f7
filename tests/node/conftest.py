"""Fixtures of the DICOM node tests: a temporary root, an in-process node.

The index is SQLite unless a test parametrizes ``backend`` with ``"postgresql"``
(``@pytest.mark.parametrize("backend", BACKENDS)``): ``config`` then points at a fresh
database on a PostgreSQL server started once per session (tests.support.postgres)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import Database
from dicom_node.scp import Node
# index backends: fixtures ``backend`` (default sqlite), ``postgres_server``, ``db_url``
from tests.support.postgres import BACKENDS, backend, db_url, postgres_server  # noqa: F401

TEST_AE = "TESTSCU"


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def config(node_root: Path, db_url: str) -> NodeConfig:
    return load_config(node_root, overrides={"host": "127.0.0.1", "port": 0, "quiet_period_s": 0.5,
                                             "ae_title": "MEDWS", "db_url": db_url or None}, env={})


@pytest.fixture
def db(config: NodeConfig) -> Iterator[Database]:
    database = Database(config.database_url, root=config.root)
    database.init_schema()
    yield database
    database.close()


@pytest.fixture
def node(config: NodeConfig) -> Iterator[Node]:
    """A started node on 127.0.0.1 (OS-chosen port) that knows the peer ``TESTSCU``."""
    n = Node(config)
    n.peers.add("tester", TEST_AE, "127.0.0.1", 11113)
    n.start()
    yield n
    n.stop()


@pytest.fixture(scope="session")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Twelve generated CT files (512 x 512, 16-bit)."""
    from dicom_node import samples

    folder = tmp_path_factory.mktemp("ct")
    return [samples.save(ds, folder / f"ct_{i:03d}.dcm") for i, ds in enumerate(samples.ct_series(12, seed=3))]
