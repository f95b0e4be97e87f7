"""DICOM over TLS (PS3.15 B.1 / BCP 195 profile): the node's TLS contexts.

One set of PEM files serves both directions, as in a hospital with one certificate
authority: ``tls_cert`` / ``tls_key`` are the node's certificate (chain) and key, shown
to the modalities and PACS that connect to it and, for mutual TLS, to the peers it
connects to; ``tls_ca`` is the CA bundle it trusts.  With ``tls_ca`` set the listener
requires a client certificate signed by it (mutual TLS); without it, clients are not
asked for one.  TLS 1.2 or later only (BCP 195 / RFC 9325), the library's secure ciphers.
"""
from __future__ import annotations

import logging
import ssl
from pathlib import Path

from dicom_node.errors import ConfigError

logger = logging.getLogger(__name__)


def _file(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path!r} not found (PEM file)")
    return path


def server_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The listener's context: our certificate; with ``ca``, client certificates required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(_file(cert, "tls_cert"), _file(key or cert, "tls_key"))
        if ca:
            ctx.load_verify_locations(_file(ca, "tls_ca"))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as e:
        raise ConfigError(f"TLS certificate/key not usable: {e}") from e
    return ctx


def client_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """The context for associations we open to a TLS peer: the peer's certificate must be
    signed by ``ca`` (else the system's trust store) and name the host we connect to; our
    certificate is presented when given (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_file(ca, "tls_ca") if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            ctx.load_cert_chain(_file(cert, "tls_cert"), _file(key or cert, "tls_key"))
        except ssl.SSLError as e:
            raise ConfigError(f"TLS certificate/key not usable: {e}") from e
    return ctx
