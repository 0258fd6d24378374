"""The static payload table the negotiation and the media layer share."""

from __future__ import annotations

import pytest

from phone_sim.errors import UsageError
from phone_sim.media import payloads
from phone_sim.media.payloads import G722, PCMA, PCMU, TELEPHONE_EVENT


def test_static_numbers_and_rtpmaps() -> None:
    assert [(f.payload_type, f.rtpmap) for f in payloads.ALL_FORMATS] == [
        (0, "PCMU/8000"),
        (8, "PCMA/8000"),
        (9, "G722/8000"),
        (101, "telephone-event/8000"),
    ]
    assert TELEPHONE_EVENT.fmtp == "0-15"
    assert TELEPHONE_EVENT.is_dtmf and not PCMU.is_dtmf


def test_g722_clock_is_8000_in_sdp_but_runs_at_16000() -> None:
    assert G722.timestamp_step(20) == 160
    assert G722.samples_per_packet(20) == 320
    assert PCMU.samples_per_packet(20) == PCMU.timestamp_step(20) == 160


def test_lookups() -> None:
    assert payloads.codec_by_name("g722") is G722
    assert payloads.codec_by_name(" ALAW ") is PCMA
    assert payloads.static_format(0) is PCMU
    assert payloads.static_format(101) is None
    assert payloads.find_format("pcma", 8000) is PCMA
    assert payloads.find_format("G722", 16000) is None
    assert payloads.find_format("telephone-event", 8000) is TELEPHONE_EVENT


@pytest.mark.parametrize("name", ["G729", "opus", "telephone-event", ""])
def test_codec_the_phone_cannot_produce_is_a_usage_error(name: str) -> None:
    with pytest.raises(UsageError, match="cannot be produced"):
        payloads.codec_by_name(name)


def test_mime_types_match_aiortc() -> None:
    from aiortc.codecs import CODECS

    aiortc_audio = {(c.mimeType, c.clockRate, c.payloadType) for c in CODECS["audio"]}
    for fmt in payloads.AUDIO_CODECS:
        assert (fmt.mime_type, fmt.clock_rate, fmt.payload_type) in aiortc_audio
