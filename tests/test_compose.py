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


def test_the_services_are_there(compose: dict[str, Any]) -> None:
    assert {"certs", "asterisk-config", "asterisk", "phones"} <= set(compose["services"])


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


def test_the_certs_and_phones_commands_are_valid(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    certs = list(compose["services"]["certs"]["command"])
    certs[certs.index("--out") + 1] = str(tmp_path / "certs")
    assert asterisk_config_main(certs) == 0
    assert (tmp_path / "certs" / "ca.pem").is_file()
    phones = compose["services"]["phones"]["command"]
    parsed = build_parser().parse_args(phones)
    assert parsed.server == "asterisk:5061"
    name = certs[certs.index("--name") + 1]
    assert phones[phones.index("--servername") + 1] == name
    assert shlex.join(phones).startswith("call ")
