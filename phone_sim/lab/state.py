"""The lab's PKI kept in a state directory (``phone-sim lab --state-dir D``), so that a restarted
lab presents a certificate from the CA its phones already trust (issue #10, item 11).

:func:`load_or_make_pki` reads ``D/ca.pem`` and ``D/ca-key.pem`` (the root CA), and
``D/server.pem`` and ``D/server-key.pem`` (the lab's certificate): it makes the CA only when
the directory has none, and issues a new server certificate from that CA when the one there
does not name every address and name the lab needs, is not the CA's, or expires within a
week. Keys are written with mode 0600, every file atomically (a crash never leaves half a key).
A directory it cannot use (a CA without its key, files that do not parse) is an error that
says which file and what to do, never a silent new CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from phone_sim.errors import UsageError
from phone_sim.tls.pki import issue_server_certificate, make_ca

__all__ = ["CA_FILE", "CA_KEY_FILE", "SERVER_FILE", "SERVER_KEY_FILE", "LabPki",
           "StateDirError", "load_or_make_pki"]

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
#: A server certificate this close to its end is replaced at start.
_RENEW_BEFORE = dt.timedelta(days=7)


class StateDirError(UsageError):
    """The state directory holds something the lab cannot use."""


@dataclass(frozen=True, kw_only=True)
class LabPki:
    """What the lab serves and what its phones trust."""

    ca_pem: bytes
    """The root CA, which phones load."""
    chain_pem: bytes
    """The lab's certificate chain, leaf first."""
    key_pem: bytes = field(repr=False)
    """The leaf's private key."""
    created_ca: bool
    """Whether the CA was made now (the directory had none)."""
    issued: bool
    """Whether the server certificate was issued now."""


def load_or_make_pki(
    directory: Path, names: Sequence[str], *, now: dt.datetime | None = None
) -> LabPki:
    """The PKI in ``directory``, made or completed as needed (see the module docstring)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"cannot create {directory}: {exc.strerror}") from None
    ca_path, ca_key_path = directory / CA_FILE, directory / CA_KEY_FILE
    if ca_path.exists() != ca_key_path.exists():
        have, missing = (ca_path, ca_key_path) if ca_path.exists() else (ca_key_path, ca_path)
        raise StateDirError(
            f"{have} has no {missing.name} beside it, so the lab cannot sign with that CA "
            f"(a state directory from an older phone-sim kept no key). Remove {have} to make "
            "a new CA; phones that trusted the old one must then load the new ca.pem"
        )
    created = False
    if ca_path.exists():
        ca_pem, ca_key_pem = _read(ca_path), _read(ca_key_path)
        ca = _check_ca(ca_pem, ca_key_pem, directory, now)
    else:
        ca_pem, ca_key_pem = make_ca(now=now)
        _write(ca_key_path, ca_key_pem, secret=True)
        _write(ca_path, ca_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        created = True
    server_path, server_key_path = directory / SERVER_FILE, directory / SERVER_KEY_FILE
    if not created and server_path.exists() and server_key_path.exists():
        chain_pem, key_pem = _read(server_path), _read(server_key_path)
        if _usable_leaf(chain_pem, key_pem, ca, names, now):
            return LabPki(ca_pem=ca_pem, chain_pem=chain_pem, key_pem=key_pem,
                          created_ca=False, issued=False)  # fmt: skip
    try:
        chain_pem, key_pem = issue_server_certificate(ca_pem, ca_key_pem, names, now=now)
    except ValueError as exc:  # pragma: no cover - _check_ca has read both already
        raise StateDirError(f"cannot sign with the CA in {directory}: {exc}") from None
    _write(server_key_path, key_pem, secret=True)
    _write(server_path, chain_pem)
    return LabPki(ca_pem=ca_pem, chain_pem=chain_pem, key_pem=key_pem, created_ca=created,
                  issued=True)  # fmt: skip


def _check_ca(
    ca_pem: bytes, ca_key_pem: bytes, directory: Path, now: dt.datetime
) -> x509.Certificate:
    remedy = f"remove {directory / CA_FILE} and {directory / CA_KEY_FILE} to make a new CA"
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise StateDirError(f"cannot read the lab's CA in {directory}: {exc}; {remedy}") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != theirs:
        raise StateDirError(f"{directory / CA_KEY_FILE} is not the key of {CA_FILE}; {remedy}")
    if not ca.not_valid_before_utc <= now < ca.not_valid_after_utc:
        raise StateDirError(f"the lab's CA in {directory} is not valid now; {remedy}")
    return ca


def _usable_leaf(
    chain_pem: bytes, key_pem: bytes, ca: x509.Certificate, names: Sequence[str],
    now: dt.datetime,
) -> bool:  # fmt: skip
    """Whether the server certificate there is this CA's, names everything, and has time."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf.verify_directly_issued_by(ca)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return False
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc - _RENEW_BEFORE:
        return False
    dns = {name.lower() for name in sans.get_values_for_type(x509.DNSName)}
    ips = set(sans.get_values_for_type(x509.IPAddress))
    for name in names:
        try:
            if ipaddress.ip_address(name) not in ips:
                return False
        except ValueError:
            if name.lower() not in dns:
                return False
    return True


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StateDirError(f"cannot read {path}: {exc.strerror}") from None


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; a key readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StateDirError(f"cannot write {path}: {exc.strerror}") from None
