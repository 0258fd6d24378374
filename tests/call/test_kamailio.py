"""phone-sim calls phone-sim through Kamailio (TLS registrar and record-routing proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from phone_sim.call.aio import CallFailed
from phone_sim.media.negotiation import Direction
from phone_sim.phone import Phone
from phone_sim.phone.config import PhoneConfig
from phone_sim.testing.aio_kamailio import Kamailio
from phone_sim.testing.certs import TestPki
from phone_sim.tls.client import TrustStore
from tests.call.test_baresip import FAST, PROFILE, _account


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


async def test_two_phone_sims_call_through_kamailio_over_tls(
    kamailio: Kamailio, peer_pki: TestPki
) -> None:
    trust = TrustStore.from_files([peer_pki.ca.cert], public_roots=False)
    async with (
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "101"),), trust=trust,
            registration=FAST)) as a,
        Phone(PhoneConfig(
            profile=PROFILE, accounts=(_account(kamailio, "102"),), trust=trust,
            registration=FAST)) as b,
    ):
        await asyncio.gather(a.register(timeout=10), b.register(timeout=10))
        call = await a.dial("102")
        incoming = await b.next_call(timeout=10)
        assert incoming.remote.startswith("sip:101@")
        await incoming.answer()
        await call.wait_answered(timeout=10)
        # The dialog follows Kamailio's Record-Route (sip:...;lr on the TLS port).
        for side in (call, incoming):
            dialog = side.session.dialog
            assert dialog is not None and dialog.route_set, "no route set"
            assert dialog.route_set[0].uri.has_param("lr")
        call.play_tone(1004)
        incoming.play_tone(697)
        await incoming.wait_tone(1004, timeout=10)
        await call.wait_tone(697, timeout=10)
        # Both advertise timer: the caller refreshes (refresher=uac), the callee watches.
        assert call.session.session_interval == 1800 and call.session.refresher_local
        assert incoming.session.session_interval == 1800
        assert not incoming.session.refresher_local
        # Kamailio challenged the INVITE (407); the UA core answered it.
        assert call.session.invite is not None
        assert "Proxy-Authorization" in call.session.invite.headers
        # An RFC 4028 refresh by UPDATE through the proxy; the callee sees it too.
        before = incoming.refreshes
        await call.refresh()
        assert await _until(lambda: incoming.refreshes > before)
        await incoming.hold()
        assert call.negotiated is not None
        assert call.negotiated.direction is Direction.RECVONLY
        await incoming.resume()
        await call.send_dtmf("#0")
        await incoming.wait_dtmf("#0", timeout=10)
        stats = call.stats
        assert stats is not None and stats.encrypted and stats.stream.srtp_auth_failures == 0
        await call.hangup()
        assert (await incoming.wait_ended(timeout=10)).by_peer
        # A call to an extension nobody registered fails with the proxy's status.
        nobody = await a.dial("103")
        with pytest.raises(CallFailed) as info:
            await nobody.wait_answered(timeout=10)
        assert info.value.status is not None and info.value.status >= 400
