"""``phone-sim tls-check``, ``tls-error`` and ``tls-matrix`` end to end, servers on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phone_sim.cli import main
from phone_sim.cli.tls import parse_target
from phone_sim.errors import UsageError
from phone_sim.tls.aio_servers import TlsTestServer, start_tls_server
from phone_sim.tls.pki import CertKind, ServerCredential, TestPki, generate_test_pki, make_crl


class ServerThread:
    """An event loop in a thread hosting test servers, so that the CLI can run asyncio.run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[TlsTestServer] = []

    def serve(self, credential: ServerCredential | None, **kwargs: object) -> str:
        fut = asyncio.run_coroutine_threadsafe(start_tls_server(credential, **kwargs), self.loop)  # type: ignore[arg-type]
        server = fut.result(5)
        self.servers.append(server)
        return f"127.0.0.1:{server.port}"

    def plain(self, reply: bytes) -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(reply)
            await writer.drain()
            writer.close()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0)

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        for s in self.servers:
            asyncio.run_coroutine_threadsafe(s.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return generate_test_pki()


@pytest.fixture(scope="module")
def servers() -> Iterator[ServerThread]:
    st = ServerThread()
    yield st
    st.stop()


@pytest.fixture(scope="module")
def ca_file(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(pki.trust_pem())
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _check(servers: ServerThread, pki: TestPki, ca: str, kind: CertKind, *extra: str) -> list[str]:
    target = servers.serve(pki.credentials[kind])
    return ["tls-check", target, "--servername", pki.server_name, "--ca", ca, *extra]


def test_good_certificate_connects(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *_check(servers, pki, ca_file, CertKind.GOOD_INTERMEDIATE))
    assert code == 0, err
    assert "Digium D65 2_9_22 -> 127.0.0.1:" in out
    assert "verdict: ok - the phone connects" in out
    assert "TLS:     TLSv1.2 " in out
    assert "[1] subject  CN=phone-sim test intermediate CA" in out
    assert "SANs     DNS:pbx.phone-sim.test, URI:sip:pbx.phone-sim.test" in out
    assert "bitmask: 0x00000000" in out


def test_vendor_example_is_reproduced_with_causes_and_fixes(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _check(servers, pki, ca_file, CertKind.UNKNOWN_CA_WRONG_NAME, "--verbose")
    code, out, _ = _run(capsys, *argv)
    assert code == 1
    assert "verdict: FAIL" in out
    assert "bitmask: 0x40000022  EUNTRUSTED | EISSUER_MISMATCH | EIDENTITY_NOT_MATCH" in out
    assert out.count("    cause: ") == 3 and out.count("    fix:   ") == 3
    assert "openssl: OpenSSL " in out
    assert "X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE" in out


def test_wildcard_cause_names_the_rfc_and_the_setting(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _check(servers, pki, ca_file, CertKind.WILDCARD_SAN)
    code, out, _ = _run(capsys, *argv)
    assert code == 1
    assert "RFC 5922 §7.2" in out and "set tls_allow_wildcard_certs=1 on this phone" in out
    code, out, _ = _run(capsys, *argv, "--firmware", "2_9_1")
    assert "upgrade to firmware >= 2_9_2 and enable tls_allow_wildcard_certs" in out
    code, out, _ = _run(capsys, *argv, "--allow-wildcard")
    assert code == 0, out


def test_json_fields(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, *_check(servers, pki, ca_file, CertKind.EXPIRED, "--json"))
    assert code == 1
    obj = json.loads(out)
    assert obj["verdict"] == "fail" and obj["bitmask"] == 4 and obj["flags"] == ["EVALIDITY_PERIOD"]
    assert obj["enforced"] is True
    assert obj["tls_version"] == "TLSv1.2" and obj["cipher"]
    assert obj["openssl_version"].startswith("OpenSSL ")
    assert obj["user_agent"] == "Digium D65 2_9_22"
    assert obj["errors"][0]["name"] == "CERT_HAS_EXPIRED"


def test_non_validating_firmware_connects_and_says_not_enforced(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _check(servers, pki, ca_file, CertKind.SELF_SIGNED, "--firmware", "2_3_9", "--json")
    code, out, _ = _run(capsys, *argv)
    obj = json.loads(out)
    assert code == 0
    assert (obj["verdict"], obj["bitmask"], obj["enforced"]) == ("ok", 2, False)


def test_firmware_without_tls_fails_with_its_reason(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _check(servers, pki, ca_file, CertKind.GOOD, "--firmware", "2_1_0", "--json")
    code, out, _ = _run(capsys, *argv)
    obj = json.loads(out)
    assert code == 1 and obj["verdict"] == "fail" and "has no TLS" in obj["reason"]


def test_tls13_only_server(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = servers.serve(pki.credentials[CertKind.GOOD], min_version=ssl.TLSVersion.TLSv1_3)
    code, out, _ = _run(capsys, "tls-check", target, "--servername", pki.server_name)
    assert code == 1
    assert "verdict: FAIL" in out and "TLS version mismatch" in out


def test_all_firmwares(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, *_check(servers, pki, ca_file, CertKind.GOOD, "--all-firmwares"))
    assert code == 0, out
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == [
        "no-tls",
        "2_2_0_4",
        "2_3_9",
        "2_9_0",
        "2_9_2",
        "2_9_2+wild",
        "d80-1_12_0",
        "d80-1_12_1",
        "d80-1_12_1+wild",
    ]
    argv = _check(servers, pki, ca_file, CertKind.WILDCARD_CN, "--all-firmwares", "--json")
    code, out, _ = _run(capsys, *argv)
    obj = json.loads(out)
    assert code == 1 and obj["verdict"] == "fail"
    by_class = {r["class"]: (r["verdict"], r["bitmask"]) for r in obj["results"]}
    assert by_class["2_9_2+wild"] == ("ok", 0)
    assert by_class["d80-1_12_1"] == ("fail", 0x40000000)
    assert by_class["2_3_9"] == ("ok", 0x40000000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tls-check", "h", "--all-firmwares", "--model", "D65"], "do not apply"),
        (
            ["tls-check", "h", "--firmware", "2_9_1", "--allow-wildcard"],
            "first appears in firmware 2_9_2",
        ),
        (
            ["tls-check", "h", "--model", "D80", "--firmware", "1_12_0", "--allow-wildcard"],
            "1_12_1",
        ),
        (["tls-check", "h:99999"], "not a number from 1 to 65535"),
        (["tls-check", "h:abc"], "not a number"),
        (["tls-check", "h", "--at", "yesterday"], "not an ISO date"),
        (["tls-check", "h", "--firmware", "2_x"], "malformed firmware version"),
        (["tls-check", "h", "--model", "D99"], "unknown phone model"),
        (["tls-check", "h", "--model", "D80", "--firmware", "2_9_22"], "never ran firmware"),
        (["tls-check", "h", "--ca", "/nonexistent/ca.pem"], "cannot read CA file"),
        (["tls-check", "h", "--crl", "/nonexistent/x.crl"], "cannot read CRL file"),
        (["tls-check", "h", "--timeout", "0"], "must be positive"),
        (["tls-check", "127.0.0.1:1", "--servername", "a..b"], "is not a valid host name"),
        (["tls-error", "hello"], "is not a bitmask"),
        (["tls-error", "0x1ffffffff"], "wider than 32 bits"),
        (["tls-matrix", "--golden", "/nonexistent/golden.txt"], "cannot read the golden table"),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_refused_port_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = _run(capsys, "tls-check", f"127.0.0.1:{port}")
    assert code == 2
    assert err.strip() == (
        f"phone-sim tls-check: error: connection refused by 127.0.0.1:{port}: "
        "nothing listens on that port"
    )


def test_non_tls_peer_is_exit_2(servers: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    target = servers.plain(b"SIP/2.0 400 Bad Request\r\n\r\n")
    code, _, err = _run(capsys, "tls-check", target)
    assert code == 2 and "does not speak TLS" in err and len(err.splitlines()) == 1


def test_keylog_option_and_environment(
    servers: ServerThread,
    pki: TestPki,
    ca_file: str,
    tmp_path: Path,
    *,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    option = tmp_path / "option.keys"
    code, _, _ = _run(
        capsys, *_check(servers, pki, ca_file, CertKind.GOOD, "--keylog", str(option))
    )
    assert code == 0 and option.read_text().startswith("CLIENT_RANDOM ")
    env = tmp_path / "env.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(env))
    code, _, _ = _run(capsys, *_check(servers, pki, ca_file, CertKind.GOOD))
    assert code == 0 and env.read_text().startswith("CLIENT_RANDOM ")


def test_crl_diagnostic_is_beyond_the_phone(
    servers: ServerThread,
    pki: TestPki,
    ca_file: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    leaf = pki.credentials[CertKind.GOOD].leaf
    crl = tmp_path / "revoked.crl"
    crl.write_bytes(make_crl(pki.root, pki.root_key, [leaf.serial_number]))
    argv = _check(servers, pki, ca_file, CertKind.GOOD, "--crl", str(crl))
    code, out, _ = _run(capsys, *argv)
    assert code == 0  # the phone never checks revocation: it still connects
    assert "beyond the phone" in out and "EREVOKED" in out
    code, out, _ = _run(capsys, *argv, "--json")
    obj = json.loads(out)
    assert obj["bitmask"] == 0 and obj["crl"]["flags"] == ["EREVOKED"]
    assert obj["crl"]["beyond_the_phone"] is True


def test_at_sets_the_phones_clock(
    servers: ServerThread, pki: TestPki, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, *_check(servers, pki, ca_file, CertKind.GOOD, "--at", "2099-01-01"))
    assert code == 1 and "0x00000004" in out


def test_tls_error_decodes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "tls-error", "0x40000022")
    assert code == 0
    assert "0x40000022 = EUNTRUSTED | EISSUER_MISMATCH | EIDENTITY_NOT_MATCH" in out
    assert "Server identity mismatch" in out


def test_tls_error_explains_the_vendor_typo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "tls-error", "0x400000022")
    assert code == 0
    assert out.startswith("note: 0x400000022 (the vendor page's example) has one digit too many")
    assert "0x40000022 = EUNTRUSTED | EISSUER_MISMATCH | EIDENTITY_NOT_MATCH" in out
    code, out, _ = _run(capsys, "tls-error", "0x400000022", "--json")
    assert json.loads(out)["bitmask"] == 0x40000022


def test_tls_error_reads_bare_digits_as_hex_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "tls-error", "40000022")
    assert code == 0
    assert out.startswith("note: 40000022 has no 0x: read as hex, as the phone shows it")
    assert "0x40000022 = EUNTRUSTED | EISSUER_MISMATCH | EIDENTITY_NOT_MATCH" in out
    code, out, _ = _run(capsys, "tls-error", "40000022", "--json")
    obj = json.loads(out)
    assert obj["bitmask"] == 0x40000022 and "read as hex" in obj["note"]
    code, _, err = _run(capsys, "tls-error", "\uff14\uff10\uff10")
    assert code == 2 and "is not a bitmask" in err


def test_tls_matrix_matches_the_golden_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "tls-matrix")
    assert code == 0, out
    assert "all 162 cells match the golden table" in out
    assert "unknown-ca-wrong-name" in out and "FAIL 0x40000022" in out


def test_tls_matrix_fails_on_a_wrong_golden_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phone_sim.tls.matrix import DEFAULT_GOLDEN_PATH

    text = DEFAULT_GOLDEN_PATH.read_text()
    lines = text.splitlines()
    idx = next(i for i, line in enumerate(lines) if line.startswith("expired "))
    lines[idx] = lines[idx].replace("fail:0x4 ", "ok:0x0   ", 1)
    bad = tmp_path / "golden.txt"
    bad.write_text("\n".join(lines) + "\n")
    code, out, _ = _run(capsys, "tls-matrix", "--golden", str(bad))
    assert code == 1
    assert "FAIL 0x4!=ok 0x0" in out and "1 of 162 cells differ" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pbx", ("pbx", 5061)),
        ("pbx:5062", ("pbx", 5062)),
        ("[::1]:5061", ("::1", 5061)),
        ("[::1]", ("::1", 5061)),
        ("::1", ("::1", 5061)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text", ["", ":5061", "[::1", "[::1]x", "h:0", "h:", "h:²", "h:٥٠٦١", "[::1]:²"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


def test_tls_matrix_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "tls-matrix", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["ok"] is True and obj["mismatches"] == 0
    assert len(obj["cells"]) == 162
    cell = next(
        c for c in obj["cells"] if c["kind"] == "unknown-ca-root-sent" and c["class"] == "2_9_0"
    )
    assert cell == {
        "kind": "unknown-ca-root-sent",
        "class": "2_9_0",
        "observed": "fail:0x2",
        "golden": "fail:0x2",
    }
