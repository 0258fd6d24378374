"""The RTP payload formats the phone can produce, as one static table.

The D-Series firmware offers PCMU (0), PCMA (8), G.722 (9), G.729 (18) and
``telephone-event/8000`` (PROTOCOL-NOTES §5). phone-sim offers only what it can really encode
(there is no free Python G.729 encoder), so the table holds G.722, PCMU, PCMA and the RFC 4733
DTMF events. The media layer maps each :class:`PayloadFormat` to an aiortc encoder through
:attr:`PayloadFormat.mime_type`, :attr:`PayloadFormat.clock_rate` and
:attr:`PayloadFormat.payload_type`, the fields of aiortc's ``RTCRtpCodecParameters``.
"""

from __future__ import annotations

from dataclasses import dataclass

from phone_sim.errors import UsageError


class UnknownCodecError(UsageError):
    """A codec name that phone-sim cannot produce (for example in an account's codec list)."""


@dataclass(frozen=True, kw_only=True)
class PayloadFormat:
    """One RTP payload format as SDP names it (``a=rtpmap``) and as the codec really runs."""

    payload_type: int
    """The payload type the phone offers: the static number, or its default dynamic one."""
    encoding_name: str
    """The encoding name in ``a=rtpmap`` (``PCMU``, ``G722``, ``telephone-event``)."""
    clock_rate: int
    """The RTP clock rate written in SDP and used for RTP timestamps (8000 for G.722)."""
    sample_rate: int
    """The audio sample rate the codec really runs at (16000 for G.722, RFC 3551 4.5.2)."""
    channels: int = 1
    """Audio channels."""
    fmtp: str | None = None
    """The ``a=fmtp`` parameters the phone sends with this format, if any."""
    static: bool = True
    """Whether the payload type is statically assigned (RFC 3551 table 4)."""

    @property
    def is_dtmf(self) -> bool:
        """Whether this is the RFC 4733 ``telephone-event`` format rather than audio."""
        return self.encoding_name.lower() == "telephone-event"

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` encoding part: ``PCMU/8000`` (channels only when not 1)."""
        text = f"{self.encoding_name}/{self.clock_rate}"
        return text if self.channels == 1 else f"{text}/{self.channels}"

    @property
    def mime_type(self) -> str:
        """The media type as aiortc's codec parameters spell it: ``audio/PCMU``."""
        return f"audio/{self.encoding_name}"

    def timestamp_step(self, ptime_ms: int) -> int:
        """RTP timestamp increment for one packet of ``ptime_ms`` (160 for 20 ms of G.722)."""
        return self.clock_rate * ptime_ms // 1000

    def samples_per_packet(self, ptime_ms: int) -> int:
        """Audio samples in one packet of ``ptime_ms`` at the real rate (320 for G.722)."""
        return self.sample_rate * ptime_ms // 1000

    def matches(self, encoding_name: str, clock_rate: int, channels: int = 1) -> bool:
        """Whether an ``a=rtpmap`` entry describes this format (names are case-insensitive)."""
        return (
            encoding_name.lower() == self.encoding_name.lower()
            and clock_rate == self.clock_rate
            and channels == self.channels
        )


PCMU = PayloadFormat(payload_type=0, encoding_name="PCMU", clock_rate=8000, sample_rate=8000)
"""G.711 mu-law (RFC 3551 4.5.14)."""

PCMA = PayloadFormat(payload_type=8, encoding_name="PCMA", clock_rate=8000, sample_rate=8000)
"""G.711 A-law (RFC 3551 4.5.14)."""

# RFC 3551 4.5.2: G.722 samples at 16 kHz but its RTP clock is 8000 "for historical reasons".
G722 = PayloadFormat(payload_type=9, encoding_name="G722", clock_rate=8000, sample_rate=16000)
"""G.722 wideband (RFC 3551 4.5.2)."""

TELEPHONE_EVENT = PayloadFormat(
    payload_type=101,
    encoding_name="telephone-event",
    clock_rate=8000,
    sample_rate=8000,
    fmtp="0-15",
    static=False,
)
"""RFC 4733 DTMF events 0-15 on the firmware's dynamic payload type 101."""

AUDIO_CODECS: tuple[PayloadFormat, ...] = (PCMU, PCMA, G722)
"""Every audio codec phone-sim can produce, in the firmware's offer order (0 8 9)."""

DEFAULT_CODECS: tuple[PayloadFormat, ...] = AUDIO_CODECS
"""The codecs an account offers when its configuration names none."""

ALL_FORMATS: tuple[PayloadFormat, ...] = (*AUDIO_CODECS, TELEPHONE_EVENT)
"""The whole table: audio codecs and the DTMF format."""

_BY_NAME = {fmt.encoding_name.lower(): fmt for fmt in ALL_FORMATS}
_ALIASES = {"g711u": PCMU, "ulaw": PCMU, "g711a": PCMA, "alaw": PCMA, "g.722": G722}
_BY_STATIC_TYPE = {fmt.payload_type: fmt for fmt in ALL_FORMATS if fmt.static}


def codec_by_name(name: str) -> PayloadFormat:
    """The audio codec called ``name`` (``"PCMU"``, ``"g722"``, ``"ulaw"``...).

    Raises :class:`UnknownCodecError` for a codec the phone cannot produce, such as G.729.
    """
    key = name.strip().lower()
    fmt = _ALIASES.get(key) or _BY_NAME.get(key)
    if fmt is None or fmt.is_dtmf:
        known = ", ".join(c.encoding_name for c in AUDIO_CODECS)
        raise UnknownCodecError(f"codec {name!r} cannot be produced by phone-sim (known: {known})")
    return fmt


def static_format(payload_type: int) -> PayloadFormat | None:
    """The format statically bound to ``payload_type`` (0, 8, 9), or ``None``."""
    return _BY_STATIC_TYPE.get(payload_type)


def find_format(encoding_name: str, clock_rate: int, channels: int = 1) -> PayloadFormat | None:
    """The table entry an ``a=rtpmap`` describes, or ``None`` when phone-sim has none."""
    for fmt in ALL_FORMATS:
        if fmt.matches(encoding_name, clock_rate, channels):
            return fmt
    return None
