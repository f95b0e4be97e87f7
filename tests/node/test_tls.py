"""DICOM over TLS against DCMTK: the node as TLS listener (plain and mutual TLS) and as TLS
client of a DCMTK storescp; certificates from a throw-away CA made with the openssl CLI."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dicom_node import samples, scu
from dicom_node.config import load_config
from dicom_node.errors import ConfigError
from dicom_node.peers import PeerRegistry
from dicom_node.scp import Node
from tests.conftest import get_port
from tests.support import dcmtk
from tests.support.medws_process import medws_process, terminate


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=medws test CA", cwd=d)
    # the node's certificate serves both roles (listener and client of its peers): both key usages
    for name, cn, ext in (("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                                  "extendedKeyUsage=serverAuth,clientAuth"),
                          ("client", "modality", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {k: str(d / f"{k}") for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def _node(tmp_path: Path, **tls: str) -> Node:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = load_config(root, overrides={"host": "127.0.0.1", "port": 0, "ae_title": "MEDWS",
                                          "require_registered": False, **tls}, env={})
    node = Node(config)
    node.start()
    return node


def _instances(node: Node) -> int:
    return int(node.db.query("SELECT COUNT(*) FROM instances")[0][0])


def test_tls_listener_stores_over_tls_and_refuses_plain_tcp(pki, tmp_path):
    node = _node(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    try:
        port = str(node.port)
        dcm = samples.save(samples.dx_chest(128, seed=1), tmp_path / "a.dcm")
        ok = dcmtk.run("storescu", "+tla", "+cf", pki["ca.pem"], "-aec", "MEDWS", "127.0.0.1", port, str(dcm))
        assert ok.returncode == 0, ok.stderr
        assert _instances(node) == 1
        plain = dcmtk.run("echoscu", "-aec", "MEDWS", "127.0.0.1", port, timeout=60)
        assert plain.returncode != 0  # a plain DICOM association gets no TLS handshake through
        wrong_ca = dcmtk.run("echoscu", "+tla", "+cf", pki["client.pem"], "-aec", "MEDWS", "127.0.0.1", port)
        assert wrong_ca.returncode != 0  # the client does not trust a certificate its CA did not sign
        again = dcmtk.run("echoscu", "+tla", "+cf", pki["ca.pem"], "-aec", "MEDWS", "127.0.0.1", port)
        assert again.returncode == 0, again.stderr  # failed handshakes did not stop the listener
    finally:
        node.stop()


def test_mutual_tls_requires_a_client_certificate_of_the_ca(pki, tmp_path):
    node = _node(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["server.key"], tls_ca=pki["ca.pem"])
    try:
        port = str(node.port)
        dcm = samples.save(samples.dx_chest(128, seed=2), tmp_path / "b.dcm")
        anonymous = dcmtk.run("storescu", "+tla", "+cf", pki["ca.pem"], "-aec", "MEDWS", "127.0.0.1", port, str(dcm))
        assert anonymous.returncode != 0 and _instances(node) == 0
        ok = dcmtk.run("storescu", "+tls", pki["client.key"], pki["client.pem"], "+cf", pki["ca.pem"],
                       "-aec", "MEDWS", "127.0.0.1", port, str(dcm))
        assert ok.returncode == 0, ok.stderr
        assert _instances(node) == 1
    finally:
        node.stop()


def test_the_node_sends_to_a_tls_peer(pki, tmp_path):
    """A peer registered with ``tls``: C-ECHO and C-STORE over TLS, the peer's certificate
    checked against ``tls_ca`` and ours presented (the DCMTK storescp requires it)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "medws.toml").write_text(f'[node]\ntls_ca = "{pki["ca.pem"]}"\ntls_cert = "{pki["client.pem"]}"\n'
                                     f'tls_key = "{pki["client.key"]}"\n')
    config = load_config(root, env={})
    from dicom_node.db import Database

    db = Database(config.database_url, root=config.root)
    db.init_schema()
    port = get_port()
    peer = PeerRegistry(db).add("pacs", "STORESCP", "127.0.0.1", port, tls=True)
    assert PeerRegistry(db).get("pacs").tls and peer.tls_context is not None
    dcm = samples.save(samples.dx_chest(128, seed=3), tmp_path / "c.dcm")
    out = tmp_path / "pacs"
    with dcmtk.storescp(port, out, extra=["+tls", pki["server.key"], pki["server.pem"], "+cf", pki["ca.pem"],
                                          "-rc"]):
        assert scu.echo(PeerRegistry(db).get("pacs"), config.ae_title) == 0
        sent = scu.send(PeerRegistry(db).get("pacs"), config.ae_title, [dcm])
        assert sent.sent == 1 and sent.failed == 0
        plain = PeerRegistry(db).get("pacs").__class__("plain", "STORESCP", "127.0.0.1", port)
        with pytest.raises(Exception):
            scu.echo(plain, config.ae_title)  # the TLS-only peer refuses plain TCP
    assert len(list(out.iterdir())) == 1
    db.close()


@pytest.mark.timeout(180)
def test_tls_with_two_acceptor_processes(pki, tmp_path):
    """``serve --workers 2`` with TLS: connections handed to the second process before any TLS
    byte, which runs the handshake there; every store over TLS lands in the one index."""
    import json
    import sys

    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "medws", "node", "init", "--root", str(root)], check=True,
                   capture_output=True)
    with open(root / "medws.toml", "a") as f:
        f.write(f'tls_cert = "{pki["server.pem"]}"\ntls_key = "{pki["server.key"]}"\n')
    port = get_port()
    with medws_process("node", "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(port),
                       "--workers", "2", "--no-require-registered") as (proc, event):
        assert event["tls"] is True and event["workers"] == 2
        files = [samples.save(samples.dx_chest(64, seed=20 + i), tmp_path / f"w{i}.dcm") for i in range(4)]
        for f in files:  # one association each: round-robin over both processes
            r = dcmtk.run("storescu", "+tla", "+cf", pki["ca.pem"], "-aec", "MEDWS", "127.0.0.1", str(port), str(f))
            assert r.returncode == 0, r.stderr
        status = json.loads(subprocess.run([sys.executable, "-m", "medws", "node", "status", "--root", str(root),
                                            "--json"], capture_output=True, text=True, check=True).stdout)
        assert status["instances"] == 4
        assert terminate(proc) == 0


def test_tls_settings_are_checked():
    from dicom_node.tls import server_context

    with pytest.raises(ConfigError, match="not found"):
        server_context("/nonexistent/cert.pem", "/nonexistent/key.pem")


def test_c_move_sub_operations_reach_a_tls_destination(pki, tmp_path):
    """C-MOVE over TLS to a node whose move destination is a TLS peer: the sub-operation
    association is TLS too (our certificate presented, the destination's checked)."""
    node = _node(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["server.key"], tls_ca=pki["ca.pem"])
    try:
        dcm = samples.save(samples.dx_chest(128, seed=4), tmp_path / "d.dcm")
        study = str(samples.dx_chest(128, seed=4).StudyInstanceUID)
        node.archive.store_file(dcm)
        dest_port = get_port()
        node.peers.add("dest", "STORESCP", "127.0.0.1", dest_port, tls=True)
        out = tmp_path / "dest"
        from dicom_node.peers import Peer
        from dicom_node.tls import client_context

        # the requestor (DCMTK's movescu has no TLS): our SCU with its own client certificate
        requestor = Peer("node", "MEDWS", "127.0.0.1", node.port, True,
                         client_context(pki["ca.pem"], pki["client.pem"], pki["client.key"]))
        with dcmtk.storescp(dest_port, out, extra=["+tls", pki["server.key"], pki["server.pem"], "+cf", pki["ca.pem"]]):
            result = scu.move(requestor, "REQUESTOR", "STORESCP", study)
        assert result.get("completed") == 1, result
        assert len(list(out.iterdir())) == 1
    finally:
        node.stop()
