"""SDP offer/answer (RFC 3264) for the phone's one audio stream, with SDES (RFC 4568).

:class:`OfferAnswer` is the per-call negotiator. It does no I/O and reads no clock: feed it
SDP bodies, take SDP bodies and :class:`NegotiatedAudio` results back. It covers the flows a
call needs: the phone's offer in an INVITE and the answer in the 18x/200; a remote offer and
the phone's answer; a re-offer from either side (hold, resume, re-key); and an INVITE without
SDP, where the phone offers in its 200 and takes the answer from the ACK. Anything the phone
cannot accept raises :class:`NegotiationError`, which carries 488 and a reason fit for a
``Warning: 399 <host> "<reason>"`` header.

The rules, from the firmware (PROTOCOL-NOTES §5 and §7, and pjmedia's SDES code):

* with SDES on, only ``RTP/SAVP`` with an ``AES_CM_128_HMAC_SHA1_80`` crypto line; the first
  acceptable line wins and the answer echoes its tag; no optimistic SRTP;
* with SDES off, only plain ``RTP/AVP``; an ``RTP/SAVP`` offer is declined, as pjmedia does
  when SRTP is disabled (``PJMEDIA_SRTP_ESDPINTRANSPORT``);
* duplicate crypto tags make the whole offer malformed (RFC 4568 5.1: a tag is unique per
  media line) and it is declined, as pjmedia does (``PJMEDIA_SRTP_ESDPDUPCRYPTOTAG``);
* keys are fresh per call and per direction; the phone keeps its own key across re-offers
  unless asked to re-key, and :attr:`NegotiatedAudio.rx_key_changed` tells the media layer
  whether the peer's key changed (a new SRTP session) or not (same session, same ROC).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from functools import cached_property

from phone_sim.errors import ProtocolError, UsageError
from phone_sim.media.payloads import (
    DEFAULT_CODECS,
    TELEPHONE_EVENT,
    PayloadFormat,
    find_format,
    static_format,
)
from phone_sim.media.sdes import (
    AES_CM_128_HMAC_SHA1_80,
    KEY_SALT_LENGTH,
    CryptoAttribute,
    SdesParseError,
    check_crypto,
    generate_key,
)
from phone_sim.media.sdp import (
    SdpAttribute,
    SdpConnection,
    SdpMedia,
    SdpOrigin,
    SdpSession,
    SdpTiming,
)

logger = logging.getLogger(__name__)

RTP_AVP = "RTP/AVP"
"""Plain RTP (RFC 3551)."""
RTP_SAVP = "RTP/SAVP"
"""Secure RTP (RFC 3711), keyed by SDES."""

DEFAULT_PTIME_MS = 20
"""The phone's packetization, and what it assumes when the peer states none."""
MAX_PTIME_MS = 120
"""The longest ``a=ptime`` the phone honours; a longer one falls back to the default."""
WARNING_CODE = 399
"""The SIP warn-code (RFC 3261 20.43) of the reason a :class:`NegotiationError` carries."""

_RTPMAP_RE = re.compile(r"([0-9]{1,3}) ([^/\s]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?")
_RTCP_RE = re.compile(r"([0-9]{1,5})(?: IN (IP4|IP6) (\S+))?")
# ASCII digits only: str.isdigit() takes "²" (int() then raises) and "٣٠" (int() = 30).
_PT_RE = re.compile(r"[0-9]{1,3}")
_MS_RE = re.compile(r"[0-9]{1,9}")


class Direction(StrEnum):
    """An RTP stream direction (RFC 3264 5.1), from the point of view of its writer."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """Whether this side sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """Whether this side receives media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, *, sends: bool, receives: bool) -> Direction:
        """The direction with these two abilities."""
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other side: ``sendonly`` <-> ``recvonly``."""
        return Direction.of(sends=self.receives, receives=self.sends)

    def __and__(self, other: Direction) -> Direction:
        return Direction.of(
            sends=self.sends and other.sends, receives=self.receives and other.receives
        )


class MediaEncryption(StrEnum):
    """An account's ``media_encryption`` setting."""

    NONE = "none"
    """Plain ``RTP/AVP``."""
    SDES = "sdes"
    """``RTP/SAVP`` keyed by SDES, and nothing else."""

    @classmethod
    def from_config(cls, value: str | None) -> MediaEncryption:
        """The setting from a config value: ``sdes``, or empty/absent/``none``/``no`` for off.

        DPMA writes ``media_encryption="sdes"`` on ``host_primary`` (PROTOCOL-NOTES §3, §4).
        """
        text = (value or "").strip().lower()
        if text in ("", "none", "no", "off", "0"):
            return cls.NONE
        if text == "sdes":
            return cls.SDES
        raise LocalAudioError(f"media_encryption {value!r} is not supported (sdes or none)")


class NegotiationError(ProtocolError):
    """The peer's SDP cannot be accepted: answer ``status`` (488) with :meth:`warning`."""

    def __init__(self, reason: str, *, status: int = 488) -> None:
        super().__init__(reason, status=status)
        self.reason = reason

    def warning(self, host: str) -> str:
        """The value of a ``Warning`` header (RFC 3261 20.43) carrying the reason."""
        text = self.reason.replace("\\", "/").replace('"', "'")
        return f'{WARNING_CODE} {host} "{text}"'


class OfferAnswerStateError(UsageError):
    """The negotiator was driven out of order (for example an answer with no offer out)."""


class LocalAudioError(UsageError):
    """The phone's own audio settings are impossible."""


@dataclass(frozen=True, kw_only=True)
class LocalAudio:
    """The phone's side of the audio stream: where it listens and what it can do."""

    host: str
    """The IP address RTP is received on, written in ``c=`` and ``o=``."""
    rtp_port: int
    """The RTP port."""
    rtcp_port: int | None = None
    """When set, written as ``a=rtcp:<port>`` (RFC 3605); RTCP is on ``rtp_port + 1`` anyway."""
    codecs: tuple[PayloadFormat, ...] = DEFAULT_CODECS
    """The account's codecs, in preference order."""
    dtmf: bool = True
    """Offer and accept ``telephone-event/8000`` (RFC 4733)."""
    dtmf_payload_type: int = 96
    """The payload type the phone offers ``telephone-event`` on (96, as the D40's SDP)."""
    media_encryption: MediaEncryption = MediaEncryption.SDES
    """SDES on (``RTP/SAVP`` only) or off (``RTP/AVP`` only)."""
    ptime_ms: int = DEFAULT_PTIME_MS
    """The packetization the phone asks for in ``a=ptime``."""
    session_name: str = "digphn"
    """``s=``, as in the D40's SDP."""
    username: str = "-"
    """The ``o=`` user name."""

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise LocalAudioError(f"local RTP host {self.host!r} is not an IP address") from None
        if address.is_unspecified or address.is_multicast:
            raise LocalAudioError(
                f"local RTP host {self.host} cannot be written in SDP: give the address the "
                "peer sends to"
            )
        for name, port in (("RTP", self.rtp_port), ("RTCP", self.rtcp_port)):
            if port is not None and not 1 <= port <= 65535:
                raise LocalAudioError(f"local {name} port {port} is not in 1-65535")
        if not self.codecs:
            raise LocalAudioError("the account has no codec to offer")
        if any(c.is_dtmf for c in self.codecs):
            raise LocalAudioError("telephone-event is not an audio codec; use dtmf=True")
        if not 96 <= self.dtmf_payload_type <= 127 or any(
            c.payload_type == self.dtmf_payload_type for c in self.codecs
        ):
            raise LocalAudioError(
                f"telephone-event payload type {self.dtmf_payload_type} must be dynamic "
                "(96-127) and not a codec's")
        if len({c.payload_type for c in self.codecs}) != len(self.codecs):
            raise LocalAudioError("the account lists a codec twice")
        if not 10 <= self.ptime_ms <= MAX_PTIME_MS or self.ptime_ms % 10:
            raise LocalAudioError(f"ptime {self.ptime_ms} ms is not a multiple of 10 in 10-120")
        if not self.session_name or any(c in self.session_name for c in "\r\n\x00"):
            raise LocalAudioError("the SDP session name must be one non-empty line")
        if not self.username or any(c.isspace() or c == "\x00" for c in self.username):
            raise LocalAudioError(f"the o= user name {self.username!r} must have no spaces")
        if not isinstance(self.media_encryption, MediaEncryption):
            raise LocalAudioError(f"media encryption {self.media_encryption!r} is not none/sdes")

    @cached_property
    def addr_type(self) -> str:
        """``IP4`` or ``IP6``, from :attr:`host`."""
        return "IP6" if ipaddress.ip_address(self.host).version == 6 else "IP4"

    @property
    def proto(self) -> str:
        """The one transport protocol this account uses."""
        return RTP_SAVP if self.media_encryption is MediaEncryption.SDES else RTP_AVP


@dataclass(frozen=True, kw_only=True)
class SrtpKeys:
    """The SDES result: one master key and salt per direction. ``repr`` never shows them."""

    suite: str = AES_CM_128_HMAC_SHA1_80
    """The crypto suite both sides use."""
    tag: int
    """The crypto tag the answer echoed."""
    tx_key: bytes = field(repr=False)
    """The phone's 30-byte master key and salt: what it protects with."""
    rx_key: bytes = field(repr=False)
    """The peer's 30-byte master key and salt: what it unprotects with."""
    rx_lifetime_packets: int | None = None
    """The lifetime the peer gave its key (RFC 4568 6.1), if any: the peer re-keys by then."""


@dataclass(frozen=True, kw_only=True)
class NegotiatedAudio:
    """What one offer/answer exchange agreed for the audio stream: the media layer's input."""

    local_host: str
    """Where the phone receives RTP."""
    local_rtp_port: int
    """The phone's RTP port."""
    remote_host: str
    """Where to send RTP (``0.0.0.0`` for an old-style hold, RFC 3264 8.4)."""
    remote_rtp_port: int
    """The peer's RTP port."""
    remote_rtcp_host: str
    """Where to send RTCP: ``a=rtcp``'s address, else :attr:`remote_host`."""
    remote_rtcp_port: int
    """The peer's RTCP port: ``a=rtcp``, else RTP + 1."""
    codec: PayloadFormat
    """The one audio codec both sides use."""
    payload_type: int
    """The payload type to send the codec with (the peer's number for it)."""
    rx_payload_type: int
    """The payload type the codec arrives with (the phone's number for it)."""
    dtmf_payload_type: int | None
    """The payload type to send ``telephone-event`` with, or ``None`` when not agreed."""
    rx_dtmf_payload_type: int | None
    """The payload type ``telephone-event`` arrives with, or ``None``."""
    ptime_ms: int
    """The packetization to send with: the peer's ``a=ptime`` when usable, else 20."""
    direction: Direction
    """The phone's view: ``sendonly`` means the phone sends and does not receive."""
    srtp: SrtpKeys | None
    """The SRTP keys, or ``None`` for plain RTP."""
    tx_key_changed: bool
    """Whether the phone's key is new (always on the first exchange)."""
    rx_key_changed: bool
    """Whether the peer's key is new: a new SRTP session, else keep it and its ROC."""

    @property
    def encrypted(self) -> bool:
        """Whether media is SRTP."""
        return self.srtp is not None


class OfferAnswerState(Enum):
    """Where the negotiation stands (RFC 3264 4)."""

    IDLE = "idle"
    """Nothing negotiated yet."""
    OFFER_SENT = "offer-sent"
    """The phone's first offer is out."""
    STABLE = "stable"
    """A session is negotiated."""
    REOFFER_SENT = "reoffer-sent"
    """A new offer from the phone is out; the previous session stays until it is answered."""


class _Input(Enum):
    CREATE_OFFER = "create_offer"
    RECEIVE_ANSWER = "receive_answer"
    OFFER_REJECTED = "offer_rejected"
    RECEIVE_OFFER = "receive_offer"


_S = OfferAnswerState
_I = _Input
# Success transitions. A declined remote offer leaves the state as it was; a declined answer
# falls back like a rejected offer. Pairs absent here are errors.
_TRANSITIONS: dict[tuple[OfferAnswerState, _Input], OfferAnswerState] = {
    (_S.IDLE, _I.CREATE_OFFER): _S.OFFER_SENT,
    (_S.STABLE, _I.CREATE_OFFER): _S.REOFFER_SENT,
    (_S.OFFER_SENT, _I.RECEIVE_ANSWER): _S.STABLE,
    (_S.REOFFER_SENT, _I.RECEIVE_ANSWER): _S.STABLE,
    (_S.OFFER_SENT, _I.OFFER_REJECTED): _S.IDLE,
    (_S.REOFFER_SENT, _I.OFFER_REJECTED): _S.STABLE,
    (_S.IDLE, _I.RECEIVE_OFFER): _S.STABLE,
    (_S.STABLE, _I.RECEIVE_OFFER): _S.STABLE,
}


@dataclass(frozen=True)
class _Audio:
    """The parts of a remote audio media line the phone uses."""

    index: int
    host: str
    port: int
    rtcp_host: str
    rtcp_port: int
    codec: PayloadFormat
    payload_type: int
    dtmf_payload_type: int | None
    ptime_ms: int
    direction: Direction
    crypto: CryptoAttribute | None


class OfferAnswer:
    """The offer/answer negotiator of one call's audio stream. Pure: no I/O, no clock.

    ``key_factory`` makes the phone's SRTP keys (30 bytes from :mod:`secrets` by default);
    ``session_id`` fixes ``o=``'s session id (random by default). The ``o=`` version starts at
    the session id, as pjsip does, and increases with every changed body the phone sends.
    """

    def __init__(
        self,
        local: LocalAudio,
        *,
        session_id: int | None = None,
        key_factory: Callable[[], bytes] = generate_key,
    ) -> None:
        self.local = local
        self.state = OfferAnswerState.IDLE
        #: The session agreed by the last successful exchange.
        self.negotiated: NegotiatedAudio | None = None
        #: The last SDP the phone sent (offer or answer).
        self.local_sdp: SdpSession | None = None
        #: The last SDP received from the peer.
        self.remote_sdp: SdpSession | None = None
        self._session_id = secrets.randbelow(2**31) + 1 if session_id is None else session_id
        self._version = self._session_id
        self._established_sdp: SdpSession | None = None
        self._sent_any = False
        self._force_new_version = False
        self._key_factory = key_factory
        self._tx_key: bytes | None = None
        self._offered_key: bytes | None = None
        self._offered_dtmf: int | None = None
        self._offered_direction = Direction.SENDRECV
        self._direction_before_offer = Direction.SENDRECV
        #: What the phone wants: sendrecv, or sendonly/inactive while it holds the call.
        self.local_direction = Direction.SENDRECV

    def __repr__(self) -> str:
        return f"<OfferAnswer {self.state.value} {self.local.proto} {self.local_direction}>"

    # --- the phone offers -------------------------------------------------------------------

    def create_offer(
        self, *, direction: Direction | None = None, rekey: bool = False
    ) -> SdpSession:
        """The phone's offer: in an INVITE, a re-INVITE, or a 200 to an INVITE without SDP.

        ``direction`` defaults to :attr:`local_direction`. The phone keeps its SRTP key in a
        re-offer (so the peer keeps its SRTP session) unless ``rekey`` is true.
        """
        self._check(_Input.CREATE_OFFER)
        self._direction_before_offer = self.local_direction
        if direction is not None:
            self.local_direction = direction
        key: bytes | None = None
        if self.local.media_encryption is MediaEncryption.SDES:
            key = self._new_key() if self._tx_key is None or rekey else self._tx_key
        formats = [(c.payload_type, c) for c in self.local.codecs]
        dtmf = None
        if self.local.dtmf:
            # RFC 3264 8.3.2: a re-offer keeps the numbers the session already uses.
            agreed = self.negotiated.rx_dtmf_payload_type if self.negotiated else None
            dtmf = agreed if agreed is not None else self.local.dtmf_payload_type
            formats.append((dtmf, TELEPHONE_EVENT))
        crypto = None if key is None else CryptoAttribute.for_key(key, tag=1)
        offer = self._stamp(self._body(formats, self.local_direction, crypto))
        self._offered_key = key
        self._offered_dtmf = dtmf
        self._offered_direction = self.local_direction
        self._set_state(_Input.CREATE_OFFER)
        self.local_sdp = offer
        return offer

    def hold(self) -> SdpSession:
        """A re-offer putting the call on hold (RFC 3264 8.4): ``sendonly``, or ``inactive``."""
        current = self.negotiated.direction if self.negotiated else Direction.SENDRECV
        return self.create_offer(
            direction=Direction.SENDONLY if current.sends else Direction.INACTIVE
        )

    def resume(self) -> SdpSession:
        """A re-offer taking the call off hold: ``sendrecv``."""
        return self.create_offer(direction=Direction.SENDRECV)

    def receive_answer(self, body: bytes | SdpSession) -> NegotiatedAudio:
        """Take the peer's answer to the phone's offer (from a 18x/200, or an ACK).

        Raises :class:`NegotiationError` if the answer is unusable; the negotiator then
        falls back as for :meth:`offer_rejected` (the call layer hangs up or re-offers).
        """
        self._check(_Input.RECEIVE_ANSWER)
        offer = self.local_sdp
        assert offer is not None
        try:
            answer = body if isinstance(body, SdpSession) else SdpSession.parse(body)
            self.remote_sdp = answer
            negotiated = self._take_answer(offer, answer, self._offered_key)
        except ProtocolError:
            self._set_state(_Input.OFFER_REJECTED)
            self._rollback()
            raise
        self._tx_key = self._offered_key
        self._set_state(_Input.RECEIVE_ANSWER)
        self._established_sdp = offer
        return self._settle(negotiated)

    def offer_rejected(self) -> None:
        """The phone's offer failed (488, 491, timeout...): keep the previous session."""
        self._check(_Input.OFFER_REJECTED)
        self._set_state(_Input.OFFER_REJECTED)
        self._rollback()

    # --- the peer offers --------------------------------------------------------------------

    def receive_offer(
        self, body: bytes | SdpSession, *, direction: Direction | None = None
    ) -> tuple[SdpSession, NegotiatedAudio]:
        """Answer the peer's offer: returns the phone's answer SDP and the agreed session.

        ``direction`` is what the phone wants (default :attr:`local_direction`); the answer
        narrows it to what the offer allows (RFC 3264 6.1). Raises :class:`NegotiationError`
        (488) when the phone declines; the state and the negotiated session stay as they were.
        An offer while the phone's own offer is out is glare, 491 (RFC 3261 14.2).
        """
        if self.state in (OfferAnswerState.OFFER_SENT, OfferAnswerState.REOFFER_SENT):
            raise NegotiationError(
                "an offer arrived while the phone's own offer is pending", status=491
            )
        self._check(_Input.RECEIVE_OFFER)
        offer = body if isinstance(body, SdpSession) else SdpSession.parse(body)
        self.remote_sdp = offer
        wanted = self.local_direction if direction is None else direction
        audio = self._pick_offered_audio(offer)
        key: bytes | None = None
        crypto: CryptoAttribute | None = None
        if audio.crypto is not None:
            key = self._tx_key if self._tx_key is not None else self._new_key()
            self._check_key(key, audio.crypto)
            crypto = CryptoAttribute.for_key(key, tag=audio.crypto.tag)
        local_direction = wanted & audio.direction.reversed()
        formats = [(audio.payload_type, audio.codec)]
        if audio.dtmf_payload_type is not None:
            formats.append((audio.dtmf_payload_type, TELEPHONE_EVENT))
        template = self._body(formats, local_direction, crypto)
        # RFC 3264 6: one answer line per offered line; the others are declined with port 0.
        media = tuple(
            template.media[0] if i == audio.index else _rejected(m)
            for i, m in enumerate(offer.media)
        )
        answer = self._stamp(replace(template, media=media))
        self._tx_key = key
        self.local_sdp = answer
        self._established_sdp = answer
        if direction is not None:
            self.local_direction = direction
        self._set_state(_Input.RECEIVE_OFFER)
        negotiated = self._result(
            audio,
            local_direction,
            key,
            rx_payload_type=audio.payload_type,
            rx_dtmf=audio.dtmf_payload_type,
        )
        return answer, self._settle(negotiated)

    # --- internals --------------------------------------------------------------------------

    def _check(self, event: _Input) -> None:
        if (self.state, event) not in _TRANSITIONS:
            raise OfferAnswerStateError(
                f"cannot {event.value.replace('_', ' ')} in state {self.state.value}"
            )

    def _set_state(self, event: _Input) -> None:
        new = _TRANSITIONS[(self.state, event)]
        if new is not self.state:
            logger.debug("offer/answer %s -> %s", self.state.value, new.value)
        self.state = new

    def _rollback(self) -> None:
        self.local_sdp = self._established_sdp
        # The failed body was sent: the next one carries a higher version whatever it holds.
        self._force_new_version = True
        self.local_direction = self._direction_before_offer

    def _new_key(self) -> bytes:
        key = self._key_factory()
        if len(key) != KEY_SALT_LENGTH:
            raise LocalAudioError(f"key factory gave {len(key)} bytes, not {KEY_SALT_LENGTH}")
        return key

    def _body(
        self,
        formats: list[tuple[int, PayloadFormat]],
        direction: Direction,
        crypto: CryptoAttribute | None,
    ) -> SdpSession:
        local = self.local
        attributes: list[SdpAttribute] = []
        if local.rtcp_port is not None:
            # pjsip's form, as in the D40's SDP: a=rtcp:<port> IN IP4 <address> (RFC 3605).
            value = f"{local.rtcp_port} IN {local.addr_type} {local.host}"
            attributes.append(SdpAttribute(name="rtcp", value=value))
        # pjmedia's order, as in the D40's SDP: the codecs' rtpmaps, the direction, then
        # telephone-event's rtpmap and fmtp.
        events: list[SdpAttribute] = []
        for pt, fmt in formats:
            target = events if fmt.is_dtmf else attributes
            target.append(SdpAttribute(name="rtpmap", value=f"{pt} {fmt.rtpmap}"))
            if fmt.fmtp is not None:
                target.append(SdpAttribute(name="fmtp", value=f"{pt} {fmt.fmtp}"))
        attributes.append(SdpAttribute(name="ptime", value=str(local.ptime_ms)))
        attributes.append(SdpAttribute(name=direction.value))
        attributes.extend(events)
        if crypto is not None:
            attributes.append(SdpAttribute(name="crypto", value=crypto.serialize()))
        media = SdpMedia(
            port=local.rtp_port,
            proto=local.proto,
            formats=tuple(str(pt) for pt, _ in formats),
            attributes=tuple(attributes),
        )
        return SdpSession(
            origin=SdpOrigin(
                username=local.username,
                session_id=self._session_id,
                session_version=self._version,
                addr_type=local.addr_type,
                address=local.host,
            ),
            session_name=local.session_name,
            connection=SdpConnection(addr_type=local.addr_type, address=local.host),
            timings=(SdpTiming(),),
            # pjsua's session attribute (no NAT detected), as in the D40's SDP.
            attributes=(SdpAttribute(name="X-nat", value="0"),),
            media=(media,),
        )

    def _stamp(self, body: SdpSession) -> SdpSession:
        """Give ``body`` its ``o=`` version: the same when unchanged, else the next (RFC 3264 8)."""
        previous = None if self._force_new_version else self._established_sdp
        if previous is not None and replace(body, origin=previous.origin) == previous:
            return previous
        if self._sent_any:
            self._version += 1
        self._sent_any = True
        self._force_new_version = False
        return replace(body, origin=replace(body.origin, session_version=self._version))

    def _settle(self, negotiated: NegotiatedAudio) -> NegotiatedAudio:
        previous = self.negotiated
        if previous is not None and previous.srtp is not None and negotiated.srtp is not None:
            negotiated = replace(
                negotiated,
                tx_key_changed=previous.srtp.tx_key != negotiated.srtp.tx_key,
                rx_key_changed=previous.srtp.rx_key != negotiated.srtp.rx_key,
            )
        elif previous is not None and previous.srtp is None and negotiated.srtp is None:
            negotiated = replace(negotiated, tx_key_changed=False, rx_key_changed=False)
        self.negotiated = negotiated
        return negotiated

    def _check_key(self, tx_key: bytes, crypto: CryptoAttribute) -> None:
        if secrets.compare_digest(tx_key, crypto.key_salt):
            # The same key in both directions would reuse the keystream (RFC 3711 9.1).
            raise NegotiationError("the peer's SRTP key is the phone's own key")

    def _result(
        self,
        audio: _Audio,
        direction: Direction,
        tx_key: bytes | None,
        *,
        rx_payload_type: int,
        rx_dtmf: int | None,
    ) -> NegotiatedAudio:
        srtp = None
        if audio.crypto is not None and tx_key is not None:
            srtp = SrtpKeys(
                suite=audio.crypto.suite,
                tag=audio.crypto.tag,
                tx_key=tx_key,
                rx_key=audio.crypto.key_salt,
                rx_lifetime_packets=audio.crypto.key_params[0].lifetime_packets,
            )
        return NegotiatedAudio(
            local_host=self.local.host,
            local_rtp_port=self.local.rtp_port,
            remote_host=audio.host,
            remote_rtp_port=audio.port,
            remote_rtcp_host=audio.rtcp_host,
            remote_rtcp_port=audio.rtcp_port,
            codec=audio.codec,
            payload_type=audio.payload_type,
            rx_payload_type=rx_payload_type,
            dtmf_payload_type=audio.dtmf_payload_type,
            rx_dtmf_payload_type=rx_dtmf,
            ptime_ms=audio.ptime_ms,
            direction=direction,
            srtp=srtp,
            tx_key_changed=True,
            rx_key_changed=True,
        )

    def _pick_offered_audio(self, offer: SdpSession) -> _Audio:
        """The first acceptable audio stream of a remote offer (RFC 3264 6)."""
        first_reason: str | None = None
        for index, media in enumerate(offer.media):
            if media.media != "audio" or media.port == 0:
                continue
            try:
                return self._read_audio(offer, index, self.local.codecs, offering=True)
            except NegotiationError as exc:
                first_reason = first_reason or exc.reason
        if first_reason is not None:
            raise NegotiationError(first_reason)
        raise NegotiationError("the offer has no active audio stream")

    def _take_answer(
        self, offer: SdpSession, answer: SdpSession, key: bytes | None
    ) -> NegotiatedAudio:
        if len(answer.media) != len(offer.media):
            raise NegotiationError(
                f"the answer has {len(answer.media)} media lines, the offer had "
                f"{len(offer.media)} (RFC 3264 6)"
            )
        media = answer.media[0]
        if media.media != "audio":
            raise NegotiationError(f"the answer's first media line is {media.media}, not audio")
        if media.port == 0:
            raise NegotiationError("the peer rejected the audio stream (port 0)")
        audio = self._read_audio(answer, 0, self.local.codecs, offering=False)
        if audio.crypto is not None:
            assert key is not None  # an SDES account always offers a key
            if audio.crypto.tag != 1:
                raise NegotiationError(
                    f"the answer's crypto tag {audio.crypto.tag} was not offered"
                )
            self._check_key(key, audio.crypto)
        # RFC 3264 6.1: the answer's direction mirrors the offer's; narrow to both.
        direction = self._offered_direction & audio.direction.reversed()
        ours = {c.encoding_name: c.payload_type for c in self.local.codecs}
        rx_dtmf = self._offered_dtmf if audio.dtmf_payload_type is not None else None
        return self._result(
            audio, direction, key, rx_payload_type=ours[audio.codec.encoding_name], rx_dtmf=rx_dtmf
        )

    def _read_audio(
        self,
        session: SdpSession,
        index: int,
        codecs: tuple[PayloadFormat, ...],
        *,
        offering: bool,
    ) -> _Audio:
        """Check one remote audio line against the phone's rules, in the firmware's order."""
        media = session.media[index]
        local = self.local
        crypto: CryptoAttribute | None = None
        if local.media_encryption is MediaEncryption.SDES:
            if media.proto != RTP_SAVP:
                raise NegotiationError(
                    # Not "this phone": the lab's echo answers with the same words.
                    f"{media.proto} offered; RTP/SAVP required (SDES, no optimistic SRTP)"
                    if offering
                    else f"the answer uses {media.proto}, not RTP/SAVP"
                )
            crypto = _choose_crypto(media)
        elif media.proto != RTP_AVP:
            raise NegotiationError(
                f"{media.proto} offered; media encryption is off here (RTP/AVP only)"
                if offering
                else f"the answer uses {media.proto}, not RTP/AVP"
            )
        codec, payload_type, dtmf = _choose_formats(media, codecs, dtmf=local.dtmf)
        connection = session.connection_for(media)
        assert connection is not None  # the parser guarantees a connection per media
        host = _check_address(connection, local)
        rtcp_host, rtcp_port = _rtcp(media, host)
        direction = _direction(session, media)
        if ipaddress.ip_address(host).is_unspecified:
            # RFC 3264 8.4: the old way to hold; the peer wants to receive nothing.
            direction = direction & Direction.SENDONLY
        return _Audio(
            index=index,
            host=host,
            port=media.port,
            rtcp_host=rtcp_host,
            rtcp_port=rtcp_port,
            codec=codec,
            payload_type=payload_type,
            dtmf_payload_type=dtmf,
            ptime_ms=_ptime(session, media),
            direction=direction,
            crypto=crypto,
        )


def _rejected(media: SdpMedia) -> SdpMedia:
    """A media line the answer declines: same media, proto and formats, port 0 (RFC 3264 6)."""
    return SdpMedia(media=media.media, port=0, proto=media.proto, formats=media.formats)


def _choose_crypto(media: SdpMedia) -> CryptoAttribute:
    """The first acceptable ``a=crypto`` (RFC 4568 7.1.2), or a decline saying why none is."""
    lines = media.get_attributes("crypto")
    if not lines:
        raise NegotiationError("RTP/SAVP without a crypto line (SDES keys are required)")
    parsed: list[CryptoAttribute | SdesParseError] = []
    seen: set[int] = set()
    for line in lines:
        try:
            attribute: CryptoAttribute | SdesParseError = CryptoAttribute.parse(line.value or "")
        except SdesParseError as exc:
            attribute = exc
        tag = attribute.tag
        if tag is not None:
            if tag in seen:
                # RFC 4568 5.1: tags are unique per media line; pjmedia declines the offer.
                raise NegotiationError(
                    f"duplicate crypto tag {tag}; the phone declines such an offer (RFC 4568 5.1)"
                )
            seen.add(tag)
        parsed.append(attribute)
    reasons: list[str] = []
    chosen: CryptoAttribute | None = None
    for attribute in parsed:
        if isinstance(attribute, SdesParseError):
            tag_text = "?" if attribute.tag is None else str(attribute.tag)
            reasons.append(f"crypto {tag_text}: {attribute}")
            continue
        reason = check_crypto(attribute)
        if reason is None:
            chosen = chosen or attribute
        else:
            reasons.append(f"crypto {attribute.tag}: {reason}")
    if chosen is None:
        raise NegotiationError("no acceptable crypto line: " + "; ".join(reasons))
    return chosen


def _rtpmaps(media: SdpMedia) -> dict[int, PayloadFormat | None]:
    """Payload type -> table format, from ``a=rtpmap`` (``None``: mapped to something else)."""
    maps: dict[int, PayloadFormat | None] = {}
    for attribute in media.get_attributes("rtpmap"):
        match = _RTPMAP_RE.fullmatch((attribute.value or "").strip())
        if match is None:
            continue  # a malformed rtpmap maps nothing; its payload type stays unknown
        pt = int(match.group(1))
        channels = int(match.group(4)) if match.group(4) else 1
        if pt not in maps:
            maps[pt] = find_format(match.group(2), int(match.group(3)), channels)
    return maps


def _choose_formats(
    media: SdpMedia, codecs: tuple[PayloadFormat, ...], *, dtmf: bool
) -> tuple[PayloadFormat, int, int | None]:
    """The first of the remote's formats the phone can produce, and its telephone-event."""
    maps = _rtpmaps(media)
    wanted = {c.encoding_name for c in codecs}
    codec: tuple[PayloadFormat, int] | None = None
    dtmf_pt: int | None = None
    for text in media.formats:
        if _PT_RE.fullmatch(text) is None or int(text) > 127:
            continue
        pt = int(text)
        fmt = maps[pt] if pt in maps else static_format(pt)
        if fmt is None:
            continue
        if fmt.is_dtmf:
            if dtmf and dtmf_pt is None:
                dtmf_pt = pt
        elif codec is None and fmt.encoding_name in wanted:
            codec = (fmt, pt)
    if codec is None:
        offered = " ".join(media.formats)[:60]
        ours = ", ".join(c.encoding_name for c in codecs)
        raise NegotiationError(f"no common codec: offered {offered}, the phone has {ours}")
    if dtmf_pt == codec[1]:
        dtmf_pt = None
    return codec[0], codec[1], dtmf_pt


def _check_address(connection: SdpConnection, local: LocalAudio) -> str:
    if connection.net_type != "IN" or connection.addr_type not in ("IP4", "IP6"):
        raise NegotiationError(
            f"connection {connection.net_type} {connection.addr_type} is not IN IP4/IP6"
        )
    if "/" in connection.address:
        raise NegotiationError("multicast media is not supported")
    try:
        address = ipaddress.ip_address(connection.address)
    except ValueError:
        raise NegotiationError(
            f"connection address {connection.address[:60]!r} is not an IP address"
        ) from None
    if (address.version == 6) != (connection.addr_type == "IP6"):
        raise NegotiationError(f"connection address does not match {connection.addr_type}")
    if connection.addr_type != local.addr_type:
        raise NegotiationError(
            f"the peer's media is {connection.addr_type}, the phone's is {local.addr_type}"
        )
    return str(address)


def _rtcp(media: SdpMedia, host: str) -> tuple[str, int]:
    """RTCP's address: ``a=rtcp`` (RFC 3605) or RTP port + 1 (RFC 3550 11)."""
    value = media.attribute_value("rtcp")
    if value is None:
        return host, media.port + 1
    match = _RTCP_RE.fullmatch(value.strip())
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise NegotiationError(f"a=rtcp:{value[:40]} is malformed (RFC 3605)")
    rtcp_host = host
    if match.group(3) is not None:
        try:
            rtcp_host = str(ipaddress.ip_address(match.group(3)))
        except ValueError:
            raise NegotiationError(f"a=rtcp address {match.group(3)[:40]!r} is not an IP") from None
    return rtcp_host, int(match.group(1))


def _direction(session: SdpSession, media: SdpMedia) -> Direction:
    """The media line's direction attribute, else the session's, else sendrecv (RFC 3264 5.1)."""
    for attributes in (media.attributes, session.attributes):
        for attribute in attributes:
            if attribute.value is None and attribute.name.lower() in Direction._value2member_map_:
                return Direction(attribute.name.lower())
    return Direction.SENDRECV


def _ptime(session: SdpSession, media: SdpMedia) -> int:
    """The packetization to send with: the peer's a=ptime if usable, capped by a=maxptime."""
    value = media.attribute_value("ptime")
    if value is None:
        value = next((a.value for a in session.get_attributes("ptime")), None)
    ptime = DEFAULT_PTIME_MS
    if value is not None and _MS_RE.fullmatch(value.strip()):
        asked = int(value.strip())
        if 10 <= asked <= MAX_PTIME_MS and asked % 10 == 0:
            ptime = asked
    maxptime = media.attribute_value("maxptime")
    if maxptime is not None and _MS_RE.fullmatch(maxptime.strip()):
        ceiling = int(maxptime.strip()) // 10 * 10
        if 10 <= ceiling < ptime:
            ptime = ceiling
    return ptime
