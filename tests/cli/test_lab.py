"""``phone-sim lab``: options, the banner, the JSON protocol, and a real registration."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from pathlib import Path

import pytest

from phone_sim.cli import build_parser, main
from phone_sim.cli.lab import event_json, event_line
from phone_sim.lab import BindingAdded, BindingRefused, BindingRemoved, Flow
from phone_sim.lab.aio_process import LabProcess
from phone_sim.lab.registrar import Binding
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import SipResponse
from tests.lab.sipclient import RegisterClient
from tests.lab.test_aio import Collector

FREE = ["--tls-port", "0", "--tcp-port", "0", "--udp-port", "0"]


def test_banner_says_how_to_point_a_phone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", *FREE, "--duration", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "registrar for lab.phone-sim.test on 127.0.0.1" in out
    for name in ("TLS", "TCP", "UDP"):
        assert f"  {name}" in out
    assert "CA file (load it on validating phones): /" in out
    assert "phone-sim register --server 127.0.0.1:" in out
    assert "--transport tls --user 101 --password 1234" in out
    assert "baresip accounts: <sip:101@lab.phone-sim.test;transport=tls>" in out
    assert "sip_cafile /" in out


def test_given_passwords_are_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lab", *FREE, "--duration", "0.2", "--user", "201:TopSecret9", "--user", "202:x:a2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "TopSecret9" not in captured.out + captured.err
    assert "users: 201, 202" in captured.out
    assert "--password PASSWORD" in captured.out


def test_json_ready_line_and_stop_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", *FREE, "--duration", "0.2", "--json", "--transport", "tcp,udp"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["ready"] is True
    assert set(lines[0]["ports"]) == {"tcp", "udp"}
    assert lines[0]["ca_file"] is None
    assert lines[-1]["stopped"] is True and lines[-1]["bindings"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "101"], "expected USER:PASSWORD"),
        (["--transport", "sctp"], "unknown transport sctp"),
        (["--duration", "-1"], "--duration must be positive"),
        (["--host", "0.0.0.0"], "needs its own users"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", *FREE, "--duration", "0.2", *argv]) == 2
    assert message in capsys.readouterr().err


def test_port_in_use_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        argv = ["lab", "--transport", "tcp", "--tcp-port", port, "--duration", "0.2"]
        assert main(argv) == 2
    assert f"cannot listen for TCP on 127.0.0.1:{port}" in capsys.readouterr().err


def test_bad_port_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["lab", "--tls-port", "70000"])
    assert info.value.code == 2


def test_event_lines_name_what_happened() -> None:
    flow = Flow(id=3, transport="TLS", remote=("127.0.0.1", 4000), local=("127.0.0.1", 5061))
    binding = Binding(
        aor="sip:101@lab", contact=NameAddr.parse("<sip:101@127.0.0.1:5099>"),
        expires_at=300.0, expires=300, call_id="c", cseq=1, flow=flow, flow_alive=True,
        source=("127.0.0.1", 4000), user_agent="Digium D40 1_4_0_0_57389",
    )  # fmt: skip
    line = event_line(BindingAdded(binding=binding))
    assert line.startswith("registered")
    assert "sip:101@lab -> sip:101@127.0.0.1:5099 via tls from 127.0.0.1:4000 (300 s)" in line
    assert "(300 s)" not in event_line(BindingRemoved(binding=binding))
    refused = BindingRefused(aor="sip:101@lab", status=401, reason="wrong", flow=flow)
    assert event_json(refused)["status"] == 401
    assert "401 wrong" in event_line(refused)


async def test_lab_process_takes_a_tls_registration_and_stops_on_sigint() -> None:
    from phone_sim.firmware import profile_for
    from phone_sim.tls.aio import open_tls_connection
    from phone_sim.tls.client import TrustStore

    async with LabProcess({"101": "1234"}) as lab:
        assert lab.ca_file is not None and lab.ca_file.exists()
        transport, protocol, verdict = await open_tls_connection(
            lab.host,
            lab.ports["tls"],
            profile=profile_for("D65", "2_9_2"),
            trust=TrustStore.from_pem(lab.ca_file.read_bytes(), public_roots=False),
            server_name=lab.server_name,
            protocol_factory=Collector,
        )
        assert verdict.connects
        assert isinstance(protocol, Collector)
        phone = RegisterClient("101", "1234", domain=lab.server_name)
        first = phone.take(bytes(await protocol.ask(phone.register())))
        assert first.status == 401
        ok = await protocol.ask(phone.register())
        assert isinstance(ok, SipResponse) and ok.status == 200
        transport.close()
        await asyncio.sleep(0)
    assert lab.final is not None
    assert lab.final["bindings"] == 1
    assert lab.final["stats"]["registers"] == 2


def test_banner_shows_the_echo_and_how_to_call_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", *FREE, "--duration", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "Echo service: dial 600" in out
    assert "phone-sim call --to 600 --server 127.0.0.1:" in out
    assert "--play tone:1004 --expect-tone 1004" in out
    assert main(["lab", *FREE, "--duration", "0.2", "--no-echo"]) == 0
    assert "Echo service" not in capsys.readouterr().out
    assert main(["lab", *FREE, "--duration", "0.2", "--echo-extension", "700", "--json"]) == 0
    ready = json.loads(capsys.readouterr().out.splitlines()[0])
    assert ready["echo"] == "700"


@pytest.mark.parametrize("argv", [["--echo-extension", "6 0"],
                                  ["--echo-extension", "201", "--user", "201:pw"]])
def test_bad_echo_extension_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", *FREE, "--duration", "0.2", *argv]) == 2
    assert "--echo-extension" in capsys.readouterr().err


@pytest.mark.timeout(60)
async def test_the_printed_call_line_reaches_the_echo_and_hears_itself() -> None:
    async with LabProcess({"101": "1234"}) as lab:
        assert lab.ca_file is not None
        base = [
            "call", "--to", "600", "--server", f"{lab.host}:{lab.ports['tls']}",
            "--transport", "tls", "--user", "101", "--password", "1234",
            "--domain", lab.server_name, "--servername", lab.server_name,
            "--ca", str(lab.ca_file), "--play", "tone:1004", "--duration", "2",
        ]  # fmt: skip
        assert await asyncio.to_thread(main, [*base, "--expect-tone", "1004"]) == 0
        # The far end is an echo, not a tone generator: another tone is not heard.
        assert await asyncio.to_thread(main, [*base, "--expect-tone", "697"]) == 1
    assert lab.final is not None
    assert lab.final["stats"]["proxy_routed"] >= 4


def test_call_event_lines() -> None:
    from phone_sim.lab.proxy import CallRefused, CallRouted

    routed = CallRouted(call_id="c1", caller="sip:101@lab", target="sip:600@lab",
                        contact="sip:600@127.0.0.1:4000", transports=("TLS", "UDP"))
    assert event_line(routed) == (
        "call         sip:101@lab -> sip:600@lab routed to sip:600@127.0.0.1:4000 (tls -> udp)"
    )
    assert event_json(routed)["transports"] == ["tls", "udp"]
    refused = CallRefused(call_id="c2", caller="sip:101@lab", target="sip:999@lab", status=404,
                          reason="Not Found")
    assert event_line(refused).endswith("sip:101@lab -> sip:999@lab: 404 Not Found")
    assert event_json(refused)["status"] == 404


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (["--max-connections-per-source", "0"], "--max-connections-per-source must be"),
        (["--first-message-timeout", "0"], "--first-message-timeout must be positive"),
        (["--idle-timeout", "-5"], "--idle-timeout must be positive"),
        (["--max-buffered-bytes", "0"], "--max-buffered-bytes must be at least 1"),
    ],
)
def test_bad_limits_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", *FREE, "--duration", "0.2", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(60)
async def test_connection_limits_from_the_command_line_hold_and_are_counted() -> None:
    args = ["--max-connections-per-source", "2", "--first-message-timeout", "0.5"]
    async with LabProcess({"101": "1234"}, transports=("tcp",), extra_args=args) as lab:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(3):
            _t, conn = await loop.create_connection(Collector, lab.host, lab.ports["tcp"])
            conns.append(conn)
        async with asyncio.timeout(10):
            for conn in conns:  # one refused at once (or made room), the others silent: closed
                await conn.lost
    assert lab.final is not None
    stats = lab.final["stats"]
    assert stats["limit_per_source"] >= 1 and stats["limit_first_message"] >= 2


# -- help, names and paths (issue #10, "The CLI, tried as a new user would") ------------------


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (lab,) = [a for a in parser._actions if a.dest == "command"]
    sub = lab.choices["lab"]  # type: ignore[index]
    undocumented = [
        a.option_strings[0] for a in sub._actions
        if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
        and "default" not in (a.help or "")
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-expires", "0"], "--min-expires must be at least 1 s, not 0"),
        (["--min-expires", "120", "--max-expires", "60"],
         "--max-expires 60 is below --min-expires 120"),
        (["--server-name", "bad name!"], "--server-name 'bad name!': not a host name"),
        (["--server-name", ""], "--server-name '': not a host name"),
        (["--server-name=-x.example"], "--server-name '-x.example': not a host name"),
        (["--user", "101"], "--user: user '101': expected USER:PASSWORD[:AUTHNAME]"),
    ],
)
def test_errors_name_the_flags(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", *FREE, "--duration", "0.2", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "min_expires" not in err and "max_expires" not in err


@pytest.mark.parametrize("name", ["pbx.example.com", "lab-2.test", "127.0.0.1", "PBX"])
def test_good_server_names_are_taken(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", *FREE, "--duration", "0.1", "--server-name", name]) == 0


def test_state_dir_is_not_made_deep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "no" / "such" / "state"
    assert main(["lab", *FREE, "--duration", "0.2", "--state-dir", str(deep)]) == 2
    assert f"--state-dir {deep}: {deep.parent} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    # One level is made, as mkdir would.
    shallow = tmp_path / "state"
    assert main(["lab", *FREE, "--duration", "0.2", "--state-dir", str(shallow)]) == 0
    assert (shallow / "ca.pem").is_file()
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["lab", *FREE, "--duration", "0.2", "--state-dir", str(afile)]) == 2
    assert f"--state-dir {afile}: not a directory" in capsys.readouterr().err
