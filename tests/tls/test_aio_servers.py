"""The loopback test servers."""

from __future__ import annotations

import pytest

from phone_sim.errors import UsageError
from phone_sim.tls.aio_servers import start_matrix_servers, start_tls_server
from phone_sim.tls.pki import CertKind, TestPki


async def test_loopback_only(pki: TestPki) -> None:
    with pytest.raises(UsageError, match="loopback only"):
        await start_tls_server(pki.credentials[CertKind.GOOD], host="0.0.0.0")


async def test_one_server_per_kind_on_distinct_ports(pki: TestPki) -> None:
    servers = await start_matrix_servers(pki)
    try:
        assert set(servers) == set(CertKind)
        assert len({s.port for s in servers.values()}) == len(servers)
        assert all(s.host == "127.0.0.1" for s in servers.values())
    finally:
        for s in servers.values():
            await s.close()
