"""TLS as the D-Series firmware does it: the pjlib bitmask, the name check, the policy.

The sans-I/O pieces live in :mod:`.flags`, :mod:`.names`, :mod:`.verdict` and
:mod:`.client`; the asyncio transport in :mod:`.aio`; the test PKI in :mod:`.pki`; the local
test servers in :mod:`.aio_servers`. See ``docs/tls.md``.
"""

from __future__ import annotations

from phone_sim.tls.client import TlsClientConnection, TlsClientContext, TrustStore
from phone_sim.tls.flags import CertVerifyFlag, decode_bitmask
from phone_sim.tls.names import NameCheck, check_server_name
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsConnectError,
    TlsError,
    TlsHandshakeError,
    TlsNoSharedCipher,
    TlsNotSupported,
    TlsRefused,
    TlsVerdict,
    TlsVersionMismatch,
)

__all__ = [
    "CertVerifyFlag",
    "NameCheck",
    "NotTlsPeer",
    "TlsClientConnection",
    "TlsClientContext",
    "TlsConnectError",
    "TlsError",
    "TlsHandshakeError",
    "TlsNoSharedCipher",
    "TlsNotSupported",
    "TlsRefused",
    "TlsVerdict",
    "TlsVersionMismatch",
    "TrustStore",
    "check_server_name",
    "decode_bitmask",
]
