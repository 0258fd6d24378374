"""The Kamailio harness (phone_sim.testing.aio_kamailio): readiness, TLS profile, location
table, restart, stop."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from phone_sim.testing.aio_kamailio import (
    Kamailio,
    KamailioConfig,
    KamailioRpcError,
    SipUser,
)
from phone_sim.testing.aio_process import PeerError, live_group_members
from phone_sim.testing.aio_pytest_peers import KamailioFactory, require
from phone_sim.testing.aio_sipp import auth_field, run_sipp
from phone_sim.testing.certs import BAD_CERT_KINDS, BadCertKind, TestPki, make_bad_server_pki


def test_unknown_user_is_named(peer_pki: TestPki, tmp_path: Path) -> None:
    kam = Kamailio(tmp_path, peer_pki)
    assert kam.user("102").password == "test-secret-102"
    with pytest.raises(KeyError, match=r"no user '999'.*101, 102, 103"):
        kam.user("999")


@pytest.mark.peer
def test_generated_config_passes_kamailio_check(tmp_path: Path, peer_pki: TestPki) -> None:
    require("kamailio")
    kam = Kamailio(tmp_path, peer_pki, KamailioConfig(users=(
        SipUser(user="201", password="pw-201", authname="auth201"),
    )))
    kam.check_config()
    assert not kam.run_dir.exists()  # the short runtime directory in /tmp goes again
    cfg = kam.cfg_path.read_text()
    assert f"listen=tls:127.0.0.1:{kam.tls_port}" in cfg
    assert '$sht(users=>auth201) = "pw-201";' in cfg
    assert 'if (is_method("INVITE|SUBSCRIBE|REFER|PUBLISH")) {' in cfg
    assert "tls_max_connections=4096" in cfg
    assert "@@" not in cfg
    # Never a bare 127.0.0.1 alias (ACK/BYE would loop back: 477).
    assert 'alias="127.0.0.1' not in cfg


def _tls_version(kam: Kamailio, pki: TestPki, version: ssl.TLSVersion) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca.cert)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection((kam.host, kam.tls_port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname=pki.server_name) as tls,
    ):
        return tls.version()


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_port_presents_the_test_certificate_and_refuses_tls_1_1(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    # The client verifies the chain and the name: the generated PKI is what Kamailio serves.
    assert _tls_version(kamailio, peer_pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _tls_version(kamailio, peer_pki, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _tls_version(kamailio, peer_pki, ssl.TLSVersion.TLSv1_1)


@pytest.mark.peer
@pytest.mark.parametrize("kind", BAD_CERT_KINDS)
def test_kamailio_serves_a_bad_certificate_on_request(
    kamailio_factory: KamailioFactory, peer_pki: TestPki, tmp_path: Path, kind: BadCertKind
) -> None:
    kam = kamailio_factory(pki=make_bad_server_pki(peer_pki, kind, tmp_path / kind))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        _tls_version(kam, peer_pki, ssl.TLSVersion.TLSv1_3)
    assert caught.value.verify_code == {
        "expired": 10, "not_yet_valid": 9, "wrong_name": 62, "self_signed": 18,
        "untrusted_ca": 20,
    }[kind]


async def _register(kam: Kamailio, tmp_path: Path, user: str, expires: int = 30) -> None:
    sip_user = kam.user(user)
    result = await run_sipp(
        "register", (kam.host, kam.udp_port), workdir=tmp_path / "sipp",
        inject=[[user, auth_field(user, sip_user.password), kam.domain, str(expires)]],
        timeout=5,
    )
    result.check()


@pytest.mark.peer
async def test_restart_keeps_ports_and_empties_the_location_table(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    await _register(kamailio, tmp_path, "101")
    assert [b.aor for b in kamailio.ul_dump()] == ["101"]
    ports = (kamailio.udp_port, kamailio.tcp_port, kamailio.tls_port)
    old_pid = kamailio.process.pid

    await kamailio.arestart()

    assert kamailio.process.pid != old_pid
    assert (kamailio.udp_port, kamailio.tcp_port, kamailio.tls_port) == ports
    assert kamailio.ul_dump() == []
    # ... and it takes registrations again on the same port.
    await _register(kamailio, tmp_path, "101")
    assert [b.aor for b in kamailio.ul_dump()] == ["101"]


@pytest.mark.peer
def test_stop_leaves_no_process_and_frees_the_ports(kamailio_factory: KamailioFactory) -> None:
    kam = kamailio_factory(KamailioConfig(default_expires=10, min_expires=5, max_expires=20))
    pid = kam.process.pid
    assert pid is not None
    kam.stop()
    assert not kam.running
    assert live_group_members(pid) == []  # the whole session (main and workers) is gone
    for kind, port in ((socket.SOCK_DGRAM, kam.udp_port), (socket.SOCK_STREAM, kam.tls_port)):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((kam.host, port))


@pytest.mark.peer
def test_a_broken_config_fails_fast_with_the_log(tmp_path: Path, peer_pki: TestPki) -> None:
    require("kamailio")
    kam = Kamailio(tmp_path, peer_pki)
    kam.pki = TestPki(
        ca=peer_pki.ca,
        server=type(peer_pki.server)(cert=tmp_path / "missing.crt", key=peer_pki.server.key),
        server_name=peer_pki.server_name,
        directory=peer_pki.directory,
    )
    with pytest.raises(Exception, match=r"kamailio: exited with status .* while starting"):
        kam.start(timeout=10)
    assert not kam.running
    assert "missing.crt" in kam.log_text()
    kam.close()


@pytest.mark.peer
def test_a_port_taken_meanwhile_is_replaced(peer_pki: TestPki, tmp_path: Path) -> None:
    require("kamailio")
    kam = Kamailio(tmp_path, peer_pki)
    taken = kam.udp_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", taken))  # another test run got there first
        try:
            kam.start()
            assert kam.udp_port != taken
            assert kam.running
            assert "Address already in use" in kam.log_text()
        finally:
            kam.close()


@pytest.mark.peer
def test_fixed_ports_are_never_moved(peer_pki: TestPki, tmp_path: Path) -> None:
    require("kamailio")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        kam = Kamailio(tmp_path, peer_pki, udp_port=port)
        with pytest.raises(PeerError, match="while starting"):
            kam.start()
        kam.close()
    assert kam.udp_port == port


@pytest.mark.peer
async def test_rpc_and_kamcmd_agree_and_rpc_errors_are_named(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    assert kamailio.bindings("101") == []
    await _register(kamailio, tmp_path, "101")
    await _register(kamailio, tmp_path, "102")

    def key(b: object) -> str:
        return repr(b)

    assert sorted(kamailio.ul_dump(), key=key) == sorted(kamailio.ul_dump_kamcmd(), key=key)
    assert [b.aor for b in kamailio.bindings("102")] == ["102"]
    assert kamailio.rpc("core.version").startswith("kamailio 5.")
    with pytest.raises(KamailioRpcError, match=r"no\.such\.method") as caught:
        kamailio.rpc("no.such.method")
    assert caught.value.code == 500
