"""``phone-sim lab --conf``, ``phone-sim boot`` and ``phone-sim demo``, as a user runs them;
and one boot across two network namespaces, as on a real LAN."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from phone_sim.cli import main
from tests.provisioning.conftest import MAC

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dpma"
PYTHON = [sys.executable, "-m", "phone_sim"]
FREE = ["--tls-port", "0", "--tcp-port", "0", "--udp-port", "0"]


def _conf(tmp_path: Path, *, service: str, general: str = "", cidr: str = "127.0.0.0/8") -> Path:
    path = tmp_path / "res_digium_phone.conf"
    path.write_text(textwrap.dedent(f"""\
        [general]
        mdns_transport=tls
        service_name={service}
        {general}
        [net]
        type=network
        cidr={cidr}
        transport=tls
        [101]
        type=line
        media_encryption=sdes
        [102]
        type=line
        [alice]
        type=phone
        mac={MAC}
        pin=4321
        line=101
        line=102
        """))
    (tmp_path / "pjsip.conf").write_text(
        "[101]\ntype=auth\npassword=secret101\n[102]\ntype=auth\npassword=secret102\n")
    return path


@contextmanager
def _lab_process(args: list[str], prefix: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """``phone-sim lab --json`` in a child process; yields its ready object."""
    process = subprocess.Popen(
        [*(prefix or []), *PYTHON, "lab", "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"the lab did not start: {err}")
        ready = json.loads(line)
        assert ready["ready"]
        yield ready
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_lab_conf_banner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = _conf(tmp_path, service=f"psim-{uuid.uuid4().hex[:8]}",
                 general="mdns_adress=10.0.0.1")
    argv = ["lab", *FREE, "--conf", str(conf), "--pjsip", str(tmp_path / "pjsip.conf"),
            "--duration", "0.3", "--no-mdns"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DPMA emulator: " in out and "(1 phones, config_auth=disabled)" in out
    assert "config_server_url (SIP): sip:proxy@127.0.0.1:" in out
    assert "HTTP:  http://127.0.0.1:" in out and "HTTPS: https://127.0.0.1:" in out
    assert "mDNS: not advertised" in out
    assert f"note: {conf}:4: option 'mdns_adress' ([general]) is not used by phone-sim" in out
    assert "users: 101, 102" in out
    assert "secret101" not in out
    # Not advertised: the suggested boot names the server's URL instead of discovering.
    assert re.search(r"phone-sim boot --mac \S+ --model D65 --config-url "
                     r"'sip:proxy@127\.0\.0\.1:\d+;transport=tls' --ca ", out), out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[general]\n#exec /bin/true\n", ":2: #exec /bin/true is refused"),
        ("[general]\nconfig_auth=maybe\n", ":2: option 'config_auth':"),
        ("[p]\ntype=phone\nline=9\n", ":3: option 'line': no type=line section [9]"),
    ],
)
def test_lab_conf_errors_name_file_and_line(tmp_path: Path, text: str, message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    assert main(["lab", *FREE, "--conf", str(path), "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert f"phone-sim lab: error: {path}{message}" in err
    assert "Traceback" not in err


def test_boot_with_a_config_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = _conf(tmp_path, service="unused", general="config_auth=pin")
    args = [*FREE, "--conf", str(conf), "--pjsip", str(tmp_path / "pjsip.conf"), "--quiet",
            "--no-mdns", "--state-dir", str(tmp_path / "state")]
    with _lab_process(args) as ready:
        url = ready["dpma"]["sip_url"]
        ca = ready["ca_file"]
        base = ["boot", "--mac", MAC, "--model", "D65", "--firmware", "2_9_2",
                "--config-url", url, "--ca", ca, "--once"]
        assert main([*base, "--pin", "4321", "--json"]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        kinds = [e.get("event") or e.get("result") for e in events]
        assert kinds[:3] == ["discovery-skipped", "config-received", "config-applied"]
        registered = sorted(e["username"] for e in events if e.get("event") == "registered")
        assert registered == ["101", "102"]
        assert kinds[-2:] == ["registered", "unregistered"]
        # a wrong PIN: refused, exit 1, one clear line
        assert main([*base, "--pin", "1111"]) == 1
        err = capsys.readouterr().err
        assert "unknown phone or wrong PIN" in err and "Traceback" not in err
        assert main(base) == 1
        assert "give the PIN (--pin)" in capsys.readouterr().err
        # the D80 boots from a configured server too
        assert main(["boot", "--mac", MAC, "--model", "D80", "--config-url", url, "--ca", ca,
                     "--pin", "4321", "--once"]) == 0
        out = capsys.readouterr().out
        assert "registered 101 with 127.0.0.1:" in out and "ready: 2 line(s)" in out


def test_boot_through_mdns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = f"psim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    conf = _conf(tmp_path, service=service)
    args = [*FREE, "--conf", str(conf), "--pjsip", str(tmp_path / "pjsip.conf"), "--quiet",
            "--state-dir", str(tmp_path / "state")]
    with _lab_process(args) as ready:
        assert ready["dpma"]["mdns"] == {"service": service, "interfaces": ["127.0.0.1"]}
        rc = main(["boot", "--mac", MAC, "--model", "D65", "--firmware", "2_9_2",
                   "--ca", ready["ca_file"], "--server", service, "--once"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "discovering DPMA over mDNS on 127.0.0.1" in out
        assert f"found {service} (sip:proxy@127.0.0.1:{ready['ports']['tls']};transport=tls)" \
            in out
        assert "registered 102 with" in out and "unregistered" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--model", "D80"], 2, "the D80 does not use mDNS: give its configuration server"),
        (["--server", "psim-nobody-home", "--discovery-timeout", "0.5"], 1,
         "no DPMA server named 'psim-nobody-home' answered"),
        (["--config-url", "ftp://127.0.0.1/cfg"], 2, "not supported by phone-sim"),
        (["--config-url", "sip:proxy@127.0.0.1:1;transport=tcp"], 2, "connection refused"),
        (["--mac", "00:11"], 2, "bad MAC address"),
        (["--countdown", "-1"], 2, "countdown cannot be negative"),
        (["--mdns-interface", "eth0"], 2, "--mdns-interface 'eth0': give the interface's IP"),
    ],
)
def test_boot_errors(argv: list[str], code: int, message: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["boot", "--mac", MAC, "--once"]
    assert main([*base, *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "test PKI:", "lab: registrar and record-routing proxy on TLS 127.0.0.1:",
        "advertised over mDNS on 127.0.0.1", "D65 2_9_2: found 'phone-sim demo",
        "D80 1_12_1: no mDNS on this model", "101 registered over TLS",
        "102 registered over TLS", "the phone would upgrade from 2_9_2 to 2_9_22",
        "call D65 -> D80 (102): answered", "the D80 hears 1004 Hz, the D65 hears 1500 Hz",
        "call D65 -> echo (600): answered", "elapsed:",
    ):
        assert expected in out, expected


# -- a real link: two network namespaces joined by a veth pair --------------------------------


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=20)


def _namespace_problem() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"psim-probe-{uuid.uuid4().hex[:6]}"
    made = _run("ip", "netns", "add", probe)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _run("ip", "netns", "delete", probe)
    return None


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str, str, str]]:
    """Two namespaces joined by a veth pair, 169.254/16 addresses only inside them."""
    problem = _namespace_problem()
    if problem is not None:
        pytest.skip(problem)
    tag = uuid.uuid4().hex[:6]
    lab_ns, phone_ns = f"psim-lab-{tag}", f"psim-phone-{tag}"
    lab_if, phone_if = f"psl{tag}", f"psp{tag}"
    octet = int(tag[:2], 16) % 250 + 2
    lab_ip, phone_ip = f"169.254.{octet}.1", f"169.254.{octet}.2"
    try:
        for cmd in (
            ["ip", "netns", "add", lab_ns], ["ip", "netns", "add", phone_ns],
            ["ip", "link", "add", lab_if, "type", "veth", "peer", "name", phone_if],
            ["ip", "link", "set", lab_if, "netns", lab_ns],
            ["ip", "link", "set", phone_if, "netns", phone_ns],
            ["ip", "-n", lab_ns, "addr", "add", f"{lab_ip}/16", "dev", lab_if],
            ["ip", "-n", phone_ns, "addr", "add", f"{phone_ip}/16", "dev", phone_if],
            ["ip", "-n", lab_ns, "link", "set", lab_if, "up"],
            ["ip", "-n", phone_ns, "link", "set", phone_if, "up"],
            ["ip", "-n", lab_ns, "link", "set", "lo", "up"],
            ["ip", "-n", phone_ns, "link", "set", "lo", "up"],
        ):
            done = _run(*cmd)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the namespaces ({' '.join(cmd)}): "
                            f"{done.stderr.strip()}")
        yield lab_ns, phone_ns, lab_ip, phone_ip
    finally:
        # Deleting a namespace deletes the veth end inside it, and so the pair.
        for ns in (lab_ns, phone_ns):
            _run("ip", "netns", "delete", ns)
        assert lab_ns not in _run("ip", "netns", "list").stdout


def test_boot_across_two_network_namespaces(
    tmp_path: Path, two_namespaces: tuple[str, str, str, str]
) -> None:
    lab_ns, phone_ns, lab_ip, phone_ip = two_namespaces
    service = f"psim-{uuid.uuid4().hex[:8]}"
    conf = _conf(tmp_path, service=service, cidr="169.254.0.0/16")
    state = tmp_path / "state"
    args = ["--host", lab_ip, *FREE, "--conf", str(conf), "--pjsip", str(tmp_path / "pjsip.conf"),
            "--mdns-interface", lab_ip, "--quiet", "--state-dir", str(state), "--no-echo"]
    with _lab_process(args, prefix=["ip", "netns", "exec", lab_ns]) as ready:
        assert ready["host"] == lab_ip
        boot = subprocess.run(
            ["ip", "netns", "exec", phone_ns, *PYTHON, "boot", "--mac", MAC, "--model", "D65",
             "--firmware", "2_9_2", "--ca", ready["ca_file"], "--mdns-interface", phone_ip,
             "--countdown", "0", "--once", "--json"],
            capture_output=True, text=True, timeout=60, check=False)
        assert boot.returncode == 0, boot.stderr + boot.stdout
        events = [json.loads(line) for line in boot.stdout.splitlines()]
        chosen = next(e for e in events if e.get("event") == "server-chosen")
        assert chosen["instance"] == service and chosen["addresses"] == [lab_ip]
        assert chosen["sip_url"] == f"sip:proxy@{lab_ip}:{ready['ports']['tls']};transport=tls"
        registered = [e for e in events if e.get("event") == "registered"]
        assert sorted(e["username"] for e in registered) == ["101", "102"]
        assert all(e["server"] == f"{lab_ip}:{ready['ports']['tls']}/tls" for e in registered)
        assert all(phone_ip in e["contact"] for e in registered)


def test_boot_then_one_call_to_the_echo(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    conf = _conf(tmp_path, service="unused")
    args = [*FREE, "--conf", str(conf), "--pjsip", str(tmp_path / "pjsip.conf"), "--quiet",
            "--no-mdns", "--state-dir", str(tmp_path / "state")]
    with _lab_process(args) as ready:
        base = ["boot", "--mac", MAC, "--model", "D65", "--config-url",
                ready["dpma"]["sip_url"], "--ca", ready["ca_file"]]
        assert main([*base, "--call", "600", "--play", "tone:1004", "--expect-tone", "1004",
                     "--call-duration", "1.5", "--json"]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        said = [e.get("event") or e.get("result") for e in events]
        assert [e for e in said if e in ("CallPlaced", "media", "tone-heard", "call-stats",
                                         "call-failed")] == [
            "CallPlaced", "media", "tone-heard", "call-stats"]
        media = next(e for e in events if e.get("event") == "media")
        assert media["encrypted"] is True
        stats = next(e for e in events if e.get("event") == "call-stats")
        assert stats["packets_received"] > 25  # 1.5 s of 20 ms packets, echoed
        assert 1004.0 in stats["tones_heard"]
        assert said[-1] == "unregistered"
        # Nobody answers for an unknown number: exit 1 with the status, still unregistered.
        assert main([*base, "--call", "699"]) == 1
        out = capsys.readouterr().out
        assert "the call to 699 failed" in out and "404" in out
        assert out.rstrip().endswith("unregistered")
        # A tone that never comes back: exit 1 and said.
        assert main([*base, "--call", "600", "--expect-tone", "700",
                     "--call-duration", "1"]) == 1
        assert "the 700 Hz tone was not heard" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--play", "tone:1004"], "--play goes with --call"),
        (["--call", "600", "--duration", "3"], "--call and --duration exclude each other"),
        (["--call", "600", "--play", "1004"], "write the tone as tone:HZ"),
        (["--call", "600", "--play", "tone:²"], "write the tone as tone:HZ"),
        (["--call", "600", "--expect-tone", "5000"], "--expect-tone must be in 20-3900 Hz"),
        (["--call", "600", "--call-duration", "0"], "--call-duration must be positive"),
    ],
)
def test_boot_call_usage_errors(argv: list[str], message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "--mac", MAC, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
