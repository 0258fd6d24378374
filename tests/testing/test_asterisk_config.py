"""Rendering an Asterisk configuration directory (phone_sim.testing.asterisk_config)."""

from __future__ import annotations

import array
import re
import sys
import wave
from pathlib import Path

import pytest

from phone_sim.media.sinks import goertzel
from phone_sim.testing.asterisk_config import (
    PLACEHOLDERS,
    AsteriskConfigError,
    AsteriskSettings,
    AsteriskUser,
    default_users,
    dpma_phones_conf,
    fill,
    phones_conf,
    render_config,
    write_tone_wav,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "asterisk"


def _settings(tmp_path: Path, **overrides: object) -> AsteriskSettings:
    values: dict[str, object] = dict(
        config_dir=tmp_path / "etc", module_dir=Path("/opt/ast/lib/asterisk/modules"),
        sbin_dir=Path("/opt/ast/sbin"), var_dir=tmp_path / "var", run_dir=tmp_path / "run",
        data_dir=tmp_path / "data", cert_file=tmp_path / "c.crt", key_file=tmp_path / "c.key",
        tls_port=40001, udp_port=40002, rtp_start=40100, rtp_end=40299,
    )
    values.update(overrides)
    return AsteriskSettings(**values)  # type: ignore[arg-type]


def test_the_fixtures_render_with_every_placeholder_filled(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    conf = render_config(FIXTURES, settings)
    assert conf == tmp_path / "etc" / "asterisk.conf"
    rendered = {p.name: p.read_text() for p in (tmp_path / "etc").iterdir()}
    for name, text in rendered.items():
        assert "@@" not in text, name
    assert "README.md" not in rendered
    assert "bind = 127.0.0.1:40001" in rendered["pjsip.conf"]
    assert "bind = 127.0.0.1:40002" in rendered["pjsip.conf"]
    assert f"cert_file = {tmp_path / 'c.crt'}" in rendered["pjsip.conf"]
    assert "rtpstart = 40100" in rendered["rtp.conf"]
    assert "rtpend = 40299" in rendered["rtp.conf"]
    assert f"astrundir => {tmp_path / 'run'}" in rendered["asterisk.conf"]
    assert "astmoddir => /opt/ast/lib/asterisk/modules" in rendered["asterisk.conf"]
    assert f"Playback({tmp_path / 'data' / 'phone-sim'}/tone-700)" in rendered["extensions.conf"]
    assert (tmp_path / "var" / "log").is_dir() and (tmp_path / "run").is_dir()


def test_every_placeholder_the_fixtures_use_is_known_and_every_known_one_is_used() -> None:
    used: set[str] = set()
    for path in FIXTURES.iterdir():
        if path.name == "README.md":
            continue  # not rendered
        used |= set(re.findall(r"@@([A-Za-z0-9_]*)@@", path.read_text()))
    assert used == PLACEHOLDERS


def test_the_users_become_endpoints_aors_and_auths(tmp_path: Path) -> None:
    users = (AsteriskUser(user="201", password="s3cret"), AsteriskUser(user="202", password="x"))
    render_config(FIXTURES, _settings(tmp_path, users=users))
    text = (tmp_path / "etc" / "pjsip_phones.conf").read_text()
    assert text == phones_conf(users)
    assert "[201](phone-endpoint)" in text and "[201](phone-aor)" in text
    assert "[202](phone-auth)\nusername = 202\npassword = x" in text
    assert "pjsip_phones.conf" in (tmp_path / "etc" / "pjsip.conf").read_text()


def test_default_users_are_the_dialplans_1xx() -> None:
    users = default_users()
    assert [u.user for u in users] == [str(n) for n in range(101, 200)]
    assert {u.password for u in users} == {"1234"}


def test_a_password_never_shows_in_repr() -> None:
    user = AsteriskUser(user="101", password="hunter2")
    assert "hunter2" not in repr(user)
    assert "hunter2" not in repr(_settings(Path("/x"), users=(user,)))


@pytest.mark.parametrize("password", ["", "a b", "semi;colon", "new\nline", "[section]", 'q"'])
def test_a_password_that_would_break_pjsip_conf_is_refused(password: str) -> None:
    with pytest.raises(AsteriskConfigError, match="password of Asterisk user '101'"):
        AsteriskUser(user="101", password=password)


@pytest.mark.parametrize("user", ["", "1 01", "a]b", "x" * 65])
def test_a_bad_user_name_is_refused(user: str) -> None:
    with pytest.raises(AsteriskConfigError, match="bad Asterisk user"):
        AsteriskUser(user=user, password="1234")


def test_an_unknown_placeholder_is_named_with_its_line() -> None:
    with pytest.raises(AsteriskConfigError, match=r"t\.conf:2: unknown placeholder @@NOPE@@"):
        fill("a\nb @@NOPE@@\n", {"X": "1"}, source="t.conf")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tls_port": 0}, "tls_port 0 is out of range"),
        ({"udp_port": 70000}, "udp_port 70000 is out of range"),
        ({"rtp_start": 100, "rtp_end": 101}, "RTP range 100-101 is too small"),
        ({"udp_port": 40001}, "TLS and UDP both on port 40001"),
        ({"users": (AsteriskUser(user="1", password="p"),) * 2}, "listed twice"),
        ({"users": (AsteriskUser(user="101", password="p"), AsteriskUser(user="0101",
                                                                          password="p"))},
         "users '101' and '0101' would both have the DPMA phone 00:0f:d3:00:01:01"),
        ({"dpma_port": 65536}, "dpma_port 65536 is out of range"),
        ({"registration_address": "pbx;x"}, "registration_address 'pbx;x' is not a host"),
        ({"dpma_address": "a b"}, "dpma_address 'a b' is not a host"),
    ],
)
def test_impossible_settings_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(AsteriskConfigError, match=re.escape(message)):
        _settings(tmp_path, **overrides)


def test_a_directory_without_asterisk_conf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "pjsip.conf").write_text("[global]\n")
    with pytest.raises(AsteriskConfigError, match=r"has no asterisk\.conf"):
        render_config(tmp_path / "tpl", _settings(tmp_path))
    with pytest.raises(AsteriskConfigError, match="not found"):
        render_config(tmp_path / "missing", _settings(tmp_path))


def test_the_tone_file_is_8khz_16bit_mono_at_its_frequency(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "t.wav", 700.0, seconds=1.0)
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        assert wav.getnframes() == 8000
        samples = array.array("h", wav.readframes(wav.getnframes()))
    if sys.byteorder != "little":
        samples.byteswap()
    ratio, level = goertzel(samples[:800], 700.0, 8000)
    assert ratio > 0.9 and -11 < level < -9
    assert goertzel(samples[:800], 1004.0, 8000)[0] < 0.05


def test_the_command_line_makes_certificates_once_then_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phone_sim.testing.asterisk_config import main

    certs = tmp_path / "certs"
    assert main(["certs", "--out", str(certs), "--address", "asterisk"]) == 0
    key = (certs / "asterisk.key").read_bytes()
    assert main(["certs", "--out", str(certs)]) == 0
    assert "already there" in capsys.readouterr().out
    assert (certs / "asterisk.key").read_bytes() == key  # a restart keeps the phones' CA valid
    assert main(["render", "--templates", str(FIXTURES), "--out", str(tmp_path / "etc"),
                 "--prefix", "/opt/phone-sim/asterisk-22.10.1", "--certs", str(certs),
                 "--state", str(tmp_path / "state"), "--run", str(tmp_path / "run"),
                 "--users", "101-110"]) == 0
    pjsip = (tmp_path / "etc" / "pjsip.conf").read_text()
    assert "bind = 0.0.0.0:5061" in pjsip and "bind = 0.0.0.0:5060" in pjsip
    assert "rtpstart = 10000" in (tmp_path / "etc" / "rtp.conf").read_text()
    phones = (tmp_path / "etc" / "pjsip_phones.conf").read_text()
    assert "[110](phone-auth)" in phones and "[111]" not in phones


@pytest.mark.parametrize("args", [["render", "--rtp", "x"], ["render", "--users", "1-"]])
def test_bad_ranges_are_usage_errors(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from phone_sim.testing.asterisk_config import main

    common = ["--templates", str(FIXTURES), "--out", str(tmp_path), "--prefix", "/p",
              "--certs", str(tmp_path), "--state", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main([*args, *common])
    assert info.value.code == 2
    assert "bad" in capsys.readouterr().err


# -- the DPMA configuration beside Asterisk's -----------------------------------------------------


def test_a_phone_user_gets_a_mac_in_digiums_oui() -> None:
    assert AsteriskUser(user="101", password="p").mac == "00:0f:d3:00:01:01"
    assert AsteriskUser(user="123456", password="p").mac == "00:0f:d3:12:34:56"
    for user in ("1234567", "alice", "10a", "1.1"):
        assert AsteriskUser(user=user, password="p").mac is None


def test_the_dpma_conf_is_rendered_beside_asterisks_from_the_same_users(tmp_path: Path) -> None:
    from phone_sim.provisioning.dpma_conf import read_dpma_conf

    users = (AsteriskUser(user="201", password="s3cret"), AsteriskUser(user="alice",
                                                                       password="x"))
    render_config(FIXTURES, _settings(tmp_path, users=users, registration_address="asterisk",
                                      dpma_address="lab", dpma_port=5071))
    etc = tmp_path / "etc"
    assert (etc / "res_digium_phone_phones.conf").read_text() == dpma_phones_conf(users)
    # The emulator reads it as phone-sim lab --conf would, passwords from pjsip.conf.
    conf = read_dpma_conf(etc / "res_digium_phone.conf", pjsip=etc / "pjsip.conf")
    assert [p.mac for p in conf.phones] == ["000fd3000201"]  # alice has no DPMA phone
    line = conf.lines["201"]
    assert line.password == "s3cret" and line.media_encryption == "sdes"
    (network,) = conf.networks
    assert (network.registration_address, network.registration_port) == ("asterisk", 40001)
    assert str(network.transport) == "tls"
    general = conf.general
    assert (general.mdns_address, general.mdns_port, str(general.mdns_transport)) == (
        "lab", 5071, "tls")
    assert general.config_auth == "mac" and not conf.notes


def test_the_dpma_addresses_default_to_the_emulators_own_and_the_bind_address(
    tmp_path: Path,
) -> None:
    from phone_sim.provisioning.dpma_conf import read_dpma_conf

    render_config(FIXTURES, _settings(tmp_path, bind_address="127.0.0.2"))
    conf = read_dpma_conf(tmp_path / "etc" / "res_digium_phone.conf",
                          pjsip=tmp_path / "etc" / "pjsip.conf")
    assert (conf.general.mdns_address, conf.general.mdns_port) == (None, None)
    assert conf.networks[0].registration_address == "127.0.0.2"
    assert _settings(tmp_path, bind_address="0.0.0.0").phone_registration_address == (
        "127.0.0.1")
    assert len(conf.phones) == 99


def test_the_dpma_options_of_the_command_line(tmp_path: Path) -> None:
    from phone_sim.testing.asterisk_config import main

    assert main(["render", "--templates", str(FIXTURES), "--out", str(tmp_path / "etc"),
                 "--prefix", "/p", "--certs", str(tmp_path), "--state", str(tmp_path / "s"),
                 "--run", str(tmp_path / "run"), "--users", "101-102",
                 "--registration-address", "asterisk", "--dpma-address", "lab",
                 "--dpma-port", "5061"]) == 0
    text = (tmp_path / "etc" / "res_digium_phone.conf").read_text()
    assert "registration_address = asterisk\nregistration_port = 5061" in text
    assert "mdns_address = lab\nmdns_port = 5061" in text
    phones = (tmp_path / "etc" / "res_digium_phone_phones.conf").read_text()
    assert "mac = 00:0f:d3:00:01:02" in phones and "[103]" not in phones
