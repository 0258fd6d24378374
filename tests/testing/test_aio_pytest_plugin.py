"""The pytest plugin, exercised as a user would: pytester runs test files that use its
fixtures against the embedded lab, a real Kamailio and a real Asterisk."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.certs import TestPki

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)

CALL_EACH_OTHER = """
async def test_tls_call(phone_sim_phone_factory):
    a = await phone_sim_phone_factory(user="101", password={pw101!r})
    b = await phone_sim_phone_factory(user="102", password={pw102!r})
    call = await a.dial("102")
    incoming = await b.next_call(timeout=10)
    await incoming.answer()
    await call.wait_answered(timeout=10)
    call.play_tone(1004)
    incoming.play_tone(697)
    await call.wait_tone(697, timeout=10)
    await incoming.wait_tone(1004, timeout=10)
    assert call.stats.encrypted and incoming.stats.encrypted
    await call.hangup()
"""


def _ini(pytester: pytest.Pytester, mode: str = "auto", **keys: str) -> None:
    lines = ["[pytest]", f"asyncio_mode = {mode}",
             "asyncio_default_fixture_loop_scope = function"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    pytester.makeini("\n".join(lines) + "\n")


def test_two_phones_call_each_other_through_the_embedded_lab(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile(CALL_EACH_OTHER.format(pw101="1234", pw102="1234"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_strict_mode_works_with_the_asyncio_mark(pytester: pytest.Pytester) -> None:
    _ini(pytester, mode="strict")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.asyncio
        async def test_echo(phone_sim_phone, phone_sim_target):
            assert phone_sim_target.kind == "lab"
            assert phone_sim_phone.registered
            call = await phone_sim_phone.dial("600")
            await call.wait_answered(timeout=10)
            call.play_tone(1004)
            await call.wait_tone(1004, timeout=10)
            await call.hangup()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_ini_keys_choose_the_model_and_firmware(pytester: pytest.Pytester) -> None:
    _ini(pytester, phone_sim_model="D80", phone_sim_firmware="1_12_1")
    pytester.makepyfile("""
        async def test_profile(phone_sim_phone_factory, phone_sim_options):
            assert phone_sim_options.model == "D80"
            phone = await phone_sim_phone_factory("103")
            assert phone.config.profile.label == "D80 1_12_1"
            old = await phone_sim_phone_factory("104", model="D65", firmware="2_9_2")
            assert old.config.profile.label == "D65 2_9_2"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_phone_on_another_transport_dials_that_transports_port(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester)
    pytester.makepyfile("""
        async def test_udp_calls_tls(phone_sim_phone_factory, phone_sim_lab):
            tls = await phone_sim_phone_factory("101")
            udp = await phone_sim_phone_factory("102", transport="udp")
            assert udp.config.primary_account.host_primary.port == phone_sim_lab.ports["udp"]
            call = await udp.dial("101")
            incoming = await tls.next_call(timeout=10)
            await incoming.answer()
            await call.wait_answered(timeout=10)
            await call.hangup()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_failing_test_reports_the_sip_exchange_redacted(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile("""
        async def test_fails(phone_sim_phone):
            call = await phone_sim_phone.dial("600")
            await call.wait_answered(timeout=10)
            assert call.negotiated is not None
            assert False, "on purpose"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    section = out[out.index("phone-sim SIP exchange"):]
    assert "REGISTER sip:" in section and "INVITE sip:600@" in section
    assert "SIP/2.0 401" in section and "SIP/2.0 200" in section
    assert "inline:[redacted]" in section
    assert 'response="[redacted]"' in section
    assert not re.search(r"inline:(?!\[redacted\])", section), "an SDES key leaked"
    assert not re.search(r'\bresponse="[0-9a-f]{32}"', section), "a digest response leaked"


def test_a_passing_test_reports_nothing_and_leaves_the_wire_log_off(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester)
    pytester.makepyfile("""
        from phone_sim.sip.wirelog import wire_enabled

        async def test_one(phone_sim_phone):
            assert wire_enabled()

        def test_after():
            assert not wire_enabled()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "phone-sim SIP exchange" not in result.stdout.str()


def test_no_password_for_a_server_user_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    _ini(pytester, phone_sim_server="127.0.0.1:5999")
    pytester.makepyfile("""
        async def test_needs_password(phone_sim_phone_factory):
            await phone_sim_phone_factory("101")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no password for user '101'*PHONE_SIM_PASSWORD*"])


def test_naming_no_asterisk_configuration_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile("""
        def test_pbx(phone_sim_asterisk):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*phone_sim_asterisk needs --phone-sim-asterisk-config*"])


def test_without_an_asterisk_build_the_asterisk_fixture_skips_saying_how(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    _ini(pytester)
    pytester.makepyfile("""
        def test_pbx(phone_sim_asterisk):
            pass
    """)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-rs",
        f"--phone-sim-asterisk-config={REPO / 'fixtures' / 'asterisk'}",
        f"--phone-sim-asterisk-prefix={tmp_path / 'no-build'}",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*has no sbin/asterisk*scripts/build-asterisk*"])


@pytest.mark.peer
def test_two_phones_call_each_other_through_kamailio(
    pytester: pytest.Pytester, kamailio: Kamailio, peer_pki: TestPki
) -> None:
    _ini(pytester)
    pytester.makepyfile(CALL_EACH_OTHER.format(pw101=kamailio.user("101").password,
                                               pw102=kamailio.user("102").password))
    result = pytester.runpytest(
        "-p", "no:cacheprovider",
        f"--phone-sim-server=127.0.0.1:{kamailio.port('tls')}",
        f"--phone-sim-ca={peer_pki.ca.cert}",
        f"--phone-sim-servername={kamailio.domain}",
    )
    result.assert_outcomes(passed=1)


@pytest.mark.asterisk
@pytest.mark.peer
@pytest.mark.usefixtures("asterisk_install")  # skip, or fail under CI, without a build
def test_phones_against_an_asterisk_from_a_named_configuration(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester, phone_sim_asterisk_config=str(REPO / "fixtures" / "asterisk"))
    pytester.makepyfile(CALL_EACH_OTHER.format(pw101="1234", pw102="1234") + textwrap.dedent("""

        async def test_milliwatt(phone_sim_phone, phone_sim_asterisk, phone_sim_target):
            assert phone_sim_target.kind == "asterisk"
            assert "Endpoint:  101" in phone_sim_asterisk.cli("pjsip show endpoint 101")
            call = await phone_sim_phone.dial("601")
            await call.wait_answered(timeout=10)
            await call.wait_tone(1004, timeout=10)
            await call.hangup()

        async def test_fails_with_the_asterisk_log(phone_sim_phone, phone_sim_asterisk):
            call = await phone_sim_phone.dial("600")
            await call.wait_answered(timeout=10)
            assert False, "on purpose"
    """))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    log = out[out.index("phone-sim asterisk log"):]
    assert "INVITE sip:600@" in log  # the fixture's Asterisk logs SIP (sip_debug)
    assert not re.search(r"inline:(?!\[redacted\])", log), "an SDES key leaked"
