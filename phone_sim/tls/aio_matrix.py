"""Run the matrix: generate the test PKI, serve every kind on loopback, try every firmware."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence

from phone_sim.firmware import FIRMWARE_CLASSES, FirmwareClass
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.aio_servers import TlsTestServer, start_matrix_servers
from phone_sim.tls.client import TlsClientContext, TrustStore
from phone_sim.tls.matrix import Cell, Golden, MatrixResult
from phone_sim.tls.pki import CertKind, generate_test_pki
from phone_sim.tls.verdict import TlsError, TlsVerdict

__all__ = ["observe", "run_matrix"]


async def observe(
    server: TlsTestServer, context: TlsClientContext, server_name: str
) -> tuple[Cell, TlsVerdict | None, str | None]:
    """One handshake as ``context``'s firmware; returns (cell, verdict, error text)."""
    if not context.profile.tls_supported:
        return Cell(connects=False, bitmask=None), None, "no TLS"
    try:
        transport, _, verdict = await open_tls_connection(
            server.host, server.port, context=context, server_name=server_name
        )
    except TlsError as exc:
        failed = exc.verdict
        mask = int(failed.bitmask) if failed is not None and failed.tls_version else None
        return Cell(connects=False, bitmask=mask), failed, str(exc)
    transport.close()
    return Cell(connects=True, bitmask=int(verdict.bitmask)), verdict, None


async def run_matrix(
    golden: Golden,
    *,
    classes: Sequence[FirmwareClass] = FIRMWARE_CLASSES,
    kinds: Sequence[CertKind] | None = None,
    server_name: str = "pbx.phone-sim.test",
    now: dt.datetime | None = None,
    progress: Callable[[CertKind, str, Cell], None] | None = None,
) -> MatrixResult:
    """Every firmware class against every certificate kind, over real TLS on 127.0.0.1."""
    pki = generate_test_pki(server_name, now=now)
    chosen = list(kinds) if kinds is not None else list(CertKind)
    servers = await start_matrix_servers(pki, {k: pki.credentials[k] for k in chosen})
    trust = TrustStore(ca_certificates=pki.trusted)
    observed: dict[tuple[CertKind, str], Cell] = {}
    try:
        for fclass in classes:
            context = TlsClientContext(fclass.profile, trust, at=now)
            cells = await asyncio.gather(
                *(observe(servers[k], context, server_name) for k in chosen)
            )
            for kind, (cell, _, _) in zip(chosen, cells, strict=True):
                observed[(kind, fclass.id)] = cell
                if progress is not None:
                    progress(kind, fclass.id, cell)
    finally:
        await asyncio.gather(*(s.close() for s in servers.values()))
    return MatrixResult(
        kinds=tuple(chosen),
        class_ids=tuple(c.id for c in classes),
        observed=observed,
        golden=golden,
    )
