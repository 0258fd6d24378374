"""docker-compose.yml and the Dockerfiles, checked without a container engine (there is none
here): the file parses, every build context, Dockerfile and mounted path exists, and the
images are made by the scripts CI runs, so they cannot drift from what is tested."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from phone_sim.cli import build_parser
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.provisioning.urls import SipConfigUrl, parse_config_url
from phone_sim.testing.asterisk_config import AsteriskUser, default_users
from phone_sim.testing.asterisk_config import main as asterisk_config_main

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume (or bind source) of a service."""
    out = {}
    for mount in service.get("volumes", []):
        source, target = mount.split(":")[:2]
        out[target] = source
    return out


def test_the_services_are_there(compose: dict[str, Any]) -> None:
    assert {"certs", "asterisk-config", "asterisk", "lab", "phones"} <= set(compose["services"])


def test_every_build_context_and_dockerfile_exists(compose: dict[str, Any]) -> None:
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert builds
    for build in builds:
        context = REPO / build["context"]
        assert context.is_dir(), context
        assert (context / build.get("dockerfile", "Dockerfile")).is_file(), build


def test_every_mounted_path_and_volume_exists(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} uses volume {source!r}, not declared"


def test_every_file_the_dockerfiles_copy_exists(compose: dict[str, Any]) -> None:
    for dockerfile in (REPO / "Dockerfile", REPO / "Dockerfile.asterisk"):
        for word, args in _dockerfile_instructions(dockerfile):
            if word == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}"


def test_the_asterisk_image_is_built_by_the_script_ci_builds_with() -> None:
    runs = [a for w, a in _dockerfile_instructions(REPO / "Dockerfile.asterisk") if w == "RUN"]
    assert any(re.match(r"/src/scripts/build-asterisk --download\b", r) for r in runs), runs
    assert any("/src/scripts/build-asterisk --install-runtime-deps" in r for r in runs), runs
    # CI builds with the same script: scripts/test calls it.
    assert "scripts/build-asterisk" in (REPO / "scripts" / "test").read_text()


def test_the_phone_sim_image_is_installed_by_the_script_ci_installs_with() -> None:
    runs = [a for w, a in _dockerfile_instructions(REPO / "Dockerfile") if w == "RUN"]
    assert "scripts/bootstrap" in runs
    assert "scripts/bootstrap test" in (REPO / "scripts" / "test").read_text()


def test_the_rendered_configuration_points_at_the_asterisk_images_prefix(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    entry = [a for w, a in _dockerfile_instructions(REPO / "Dockerfile.asterisk")
             if w == "ENTRYPOINT"][-1]
    binary, conf = re.findall(r'"(/[^"]+)"', entry)[0], re.findall(r'"(/[^"]+\.conf)"', entry)[0]
    render = compose["services"]["asterisk-config"]
    args = list(render["command"])
    prefix = args[args.index("--prefix") + 1]
    assert binary == f"{prefix}/sbin/asterisk"
    assert conf == f"{args[args.index('--out') + 1]}/asterisk.conf"
    health = compose["services"]["asterisk"]["healthcheck"]["test"]
    assert health[1] == binary and conf in health

    # The compose command renders fixtures/asterisk (container paths moved under tmp_path).
    def local(path: str) -> str:
        return str(REPO / "fixtures" / "asterisk") if path == "/fixtures/asterisk" else (
            str(tmp_path) + path)

    for flag in ("--templates", "--out", "--certs", "--state", "--run"):
        args[args.index(flag) + 1] = local(args[args.index(flag) + 1])
    assert asterisk_config_main(args) == 0
    pjsip = (Path(local("/etc/phone-sim/asterisk")) / "pjsip.conf").read_text()
    assert "bind = 0.0.0.0:5061" in pjsip and "bind = 0.0.0.0:5060" in pjsip
    ports = compose["services"]["asterisk"]["ports"]
    assert "127.0.0.1:5061:5061/tcp" in ports and "127.0.0.1:5060:5060/udp" in ports


def test_the_certs_command_is_valid_and_names_the_asterisk_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    certs = list(compose["services"]["certs"]["command"])
    certs[certs.index("--out") + 1] = str(tmp_path / "certs")
    assert asterisk_config_main(certs) == 0
    assert (tmp_path / "certs" / "ca.pem").is_file()
    # The lab sends the phones to the registration address: the certificate must name it.
    render = compose["services"]["asterisk-config"]["command"]
    address = _value(render, "--registration-address")
    assert address in compose["services"] and address == "asterisk"
    assert address in certs[certs.index("--address"):]


def test_the_files_the_render_names_are_there_for_asterisk(compose: dict[str, Any]) -> None:
    render = compose["services"]["asterisk-config"]["command"]
    asterisk = _mounts(compose["services"]["asterisk"])
    writes = _mounts(compose["services"]["asterisk-config"])
    out, certs = _value(render, "--out"), _value(render, "--certs")
    assert asterisk.get(out) == writes[out] == "asterisk-config"
    assert asterisk.get(certs) == _mounts(compose["services"]["certs"])["/certs"] == "certs"
    # The state and control socket directories are the image's own.
    runs = " ".join(a for w, a in _dockerfile_instructions(REPO / "Dockerfile.asterisk")
                    if w == "RUN")
    for flag in ("--state", "--run"):
        assert f" {_value(render, flag)}" in runs, f"Dockerfile.asterisk makes no {flag} dir"


def test_the_lab_serves_the_dpma_conf_rendered_beside_asterisks(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    lab, render = services["lab"], list(services["asterisk-config"]["command"])
    assert lab["depends_on"]["asterisk-config"]["condition"] == "service_completed_successfully"
    assert lab["build"]["dockerfile"] == "Dockerfile" and lab["image"] == "phone-sim:local"
    argv = lab["command"]
    args = build_parser().parse_args(argv)
    assert args.func.__module__ == "phone_sim.cli.lab"
    out = _value(render, "--out")
    assert _mounts(lab)[out] == "asterisk-config"
    assert args.conf == f"{out}/res_digium_phone.conf" and args.pjsip == f"{out}/pjsip.conf"
    assert args.provisioning_only and args.no_mdns and args.transport == "tls"
    # Where the render sends the phones is where the lab listens, with a certificate for it.
    assert args.server_name == _value(render, "--dpma-address") == "lab"
    assert str(args.tls_port) == _value(render, "--dpma-port")
    assert f"('127.0.0.1', {args.tls_port})" in " ".join(lab["healthcheck"]["test"])
    # The compose render makes a DPMA configuration the emulator reads, phones 101-199.
    for flag in ("--templates", "--out", "--certs", "--state", "--run"):
        local = REPO / "fixtures" / "asterisk" if flag == "--templates" else tmp_path / flag[2:]
        render[render.index(flag) + 1] = str(local)
    assert asterisk_config_main(render) == 0
    conf = read_dpma_conf(tmp_path / "out" / "res_digium_phone.conf",
                          pjsip=tmp_path / "out" / "pjsip.conf")
    assert len(conf.phones) == len(default_users()) and not conf.notes
    (network,) = conf.networks
    assert network.registration_address == "asterisk" and network.registration_port == 5061


def test_the_phones_boot_from_the_lab_register_to_asterisk_and_call_the_echo(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    phones, lab = services["phones"], services["lab"]
    render = services["asterisk-config"]["command"]
    argv = phones["command"]
    args = build_parser().parse_args(argv)
    assert shlex.join(argv).startswith("boot ") and args.func.__module__ == "phone_sim.cli.boot"
    assert phones["depends_on"] == {"asterisk": {"condition": "service_healthy"},
                                    "lab": {"condition": "service_healthy"}}
    url = parse_config_url(args.config_url)
    assert isinstance(url, SipConfigUrl)
    assert (url.host, url.port, str(url.transport)) == (
        _value(render, "--dpma-address"), int(_value(render, "--dpma-port")), "tls")
    # The MAC is the phone of a rendered user.
    first, last = (int(n) for n in _value(render, "--users").split("-"))
    macs = {AsteriskUser(user=str(n), password="x").mac: n for n in range(first, last + 1)}
    assert macs[args.mac] == 101
    # It trusts the lab's CA (written to the lab's --state-dir, a volume it mounts too) and
    # the CA the certs service made for Asterisk.
    lab_state = build_parser().parse_args(lab["command"]).state_dir
    volume = _mounts(lab)[lab_state]
    seen = _mounts(phones)
    assert {f"{where}/ca.pem" for where, name in seen.items() if name == volume} & set(args.ca)
    assert {f"{where}/ca.pem" for where, name in seen.items() if name == "certs"} & set(args.ca)
    # 600 is the dialplan's echo: the tone sent is the tone expected back.
    assert args.call == "600" and args.play == "tone:1004" and args.expect_tone == 1004
    dialplan = (REPO / "fixtures" / "asterisk" / "extensions.conf").read_text()
    assert re.search(r"exten => 600,1,Answer\(\)\n same => n,Echo\(\)", dialplan)
