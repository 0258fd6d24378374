"""A phone without a registrar: :class:`UdpCallAgent`, one line on one UDP port that places
calls straight to ``sip:`` URIs and answers what arrives (SIPp tests, the lab's echo
service, direct phone-to-phone calls).

It is a :class:`~phone_sim.phone.aio.Phone` whose one line does not register
(``register="0"``): the same core, the same calls, no second SIP stack.
"""

from __future__ import annotations

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.session import CallConfig
from phone_sim.errors import UsageError
from phone_sim.firmware import FirmwareProfile, profile_for
from phone_sim.media.negotiation import MediaEncryption
from phone_sim.phone.aio import Phone
from phone_sim.phone.config import NetworkOptions, PhoneConfig
from phone_sim.sip.uri import SipUri

__all__ = ["UdpCallAgent"]


class UdpCallAgent(Phone):
    """A phone's SIP stack on *host*:*port* (0: any free port) over UDP, with calls and no
    registration.

    ``async with UdpCallAgent("127.0.0.1", user="101") as agent:`` then
    ``await agent.dial("sip:102@127.0.0.1:5070")`` or ``await agent.next_call()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = "phone",
        profile: FirmwareProfile | None = None,
        config: CallConfig | None = None,
        auto_answer: bool = False,
        media_encryption: MediaEncryption = MediaEncryption.SDES,
    ) -> None:
        encryption = "sdes" if media_encryption is MediaEncryption.SDES else None
        # The line's "server" is the agent's own address: it never registers, and its calls
        # go straight to the URI dialled.
        account = Account(username=user, password="", register=False,
                          host_primary=SipHost(server=host, transport=SipTransport.UDP,
                                               media_encryption=encryption))
        super().__init__(PhoneConfig(
            profile=profile or profile_for("D65"), accounts=(account,),
            calls=config or CallConfig(), auto_answer=auto_answer,
            network=NetworkOptions(local_host=host, sip_port=port),
        ))

    @property
    def port(self) -> int:
        """The UDP port bound (after ``async with``)."""
        address = self.sip_address
        if address is None:
            raise UsageError("start the agent first (async with)")
        return address[1]

    @property
    def uri(self) -> SipUri:
        """``sip:user@host:port``."""
        address = self.sip_address
        if address is None:
            raise UsageError("start the agent first (async with)")
        return SipUri("sip", self.account.username, None, address[0], address[1], ())

    async def __aenter__(self) -> UdpCallAgent:
        await self.wait_ready(timeout=10.0)
        return self
