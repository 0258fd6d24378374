"""The lab's PKI in a state directory (``phone-sim lab --state-dir``): kept across restarts so
that phones which trusted the lab's CA still trust it (issue #10, item 11)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from phone_sim.lab import Lab, LabError
from phone_sim.lab.aio_process import LabProcess
from phone_sim.lab.state import load_or_make_pki
from tests.lab.sipclient import RegisterClient
from tests.lab.test_aio import register_stream, tls_connect

pytestmark = pytest.mark.timeout(60)

USERS = {"101": "1234", "102": "1234"}


async def test_a_lab_with_a_state_dir_keeps_its_pki(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with Lab(USERS, transports=["tls"], state_dir=state) as first:
        ca = first.ca_pem
        assert first.ca_file == state / "ca.pem"
    for name in ("ca-key.pem", "server-key.pem"):
        mode = stat.S_IMODE(os.stat(state / name).st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    async with Lab(USERS, transports=["tls"], state_dir=state) as second:
        assert second.ca_pem == ca and (state / "ca.pem").read_bytes() == ca
        # A phone that trusted the first lab's CA connects to the second.
        conn = await tls_connect(second)
        assert (await register_stream(conn, RegisterClient("101", "1234"))).status == 200
    # Another server name: a new certificate from the same CA.
    async with Lab(USERS, transports=["tls"], state_dir=state, server_name="pbx.test") as third:
        assert third.ca_pem == ca
        ctx = ssl.create_default_context(cadata=ca.decode())
        reader, writer = await asyncio.open_connection(
            third.host, third.ports["tls"], ssl=ctx, server_hostname="pbx.test")
        writer.close()
        del reader


async def test_a_state_dir_with_a_ca_but_no_key_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(LabError, match=r"ca-key\.pem"):
        async with Lab(USERS, transports=["tls"], state_dir=tmp_path):
            pass
    (tmp_path / "ca-key.pem").write_bytes(b"junk")
    with pytest.raises(LabError, match="cannot read the lab's CA"):
        async with Lab(USERS, transports=["tls"], state_dir=tmp_path):
            pass


async def test_phone_sim_lab_with_a_state_dir_reuses_its_ca(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    cas = []
    for _ in range(2):
        async with LabProcess(extra_args=["--state-dir", state]) as lab:
            assert lab.ca_file is not None
            cas.append(lab.ca_file.read_bytes())
    assert cas[0] == cas[1]


def test_the_certificate_is_renewed_from_the_same_ca_when_it_would_expire(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    first = load_or_make_pki(tmp_path, ["lab.test", "127.0.0.1"], now=now)
    assert first.created_ca and first.issued
    again = load_or_make_pki(tmp_path, ["lab.test", "127.0.0.1"], now=now)
    assert not again.created_ca and not again.issued and again.chain_pem == first.chain_pem
    later = load_or_make_pki(tmp_path, ["lab.test", "127.0.0.1"], now=now + dt.timedelta(days=360))
    assert later.issued and later.ca_pem == first.ca_pem
    leaf = x509.load_pem_x509_certificate(later.chain_pem)
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(first.ca_pem))
