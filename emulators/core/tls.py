"""A local CA and the emulators' server certificate, kept under the state folder.

Key Vault clients refuse plain http, so every emulator speaks HTTPS. The certificate covers loopback
and every App Service host name form (emulators/core/hosts.py), so a client reaching an emulated app by its
real host name through the proxy verifies it against the same CA bundle. The CA is made once per state
folder and reused on restart; a folder whose certificate names fewer names (made by an older version)
gets a new CA and certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from emulators.core import hosts

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def server_names() -> tuple[str, ...]:
    return (*LOOPBACK_NAMES, *hosts.certificate_names())


def ensure_certificates(tls_dir: Path) -> tuple[Path, Path, Path]:
    """Return (ca bundle, server chain, server key), creating them on first use."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_path = tls_dir / "ca.pem"
    chain_path = tls_dir / "server-chain.pem"
    key_path = tls_dir / "server-key.pem"
    names_path = tls_dir / "server-names.txt"
    names = "\n".join(server_names())
    current = names_path.read_text() if names_path.exists() else None
    if not (ca_path.exists() and chain_path.exists() and key_path.exists()) or current != names:
        ca = trustme.CA(organization_name="keyrotation local emulators")
        leaf = ca.issue_cert(*server_names())
        key_path.write_bytes(leaf.private_key_pem.bytes())
        key_path.chmod(0o600)
        chain_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        ca_path.write_bytes(ca.cert_pem.bytes())
        names_path.write_text(names)
    return ca_path, chain_path, key_path


def server_context(tls_dir: Path) -> tuple[ssl.SSLContext, Path]:
    """An SSL context for the listener and the CA bundle clients must trust."""
    ca_path, chain_path, key_path = ensure_certificates(tls_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain_path, key_path)
    return ctx, ca_path
