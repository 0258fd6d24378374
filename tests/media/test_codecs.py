"""G.722, PCMU and PCMA through aiortc's codecs."""

from __future__ import annotations

import array
import math

import pytest

from phone_sim.media import payloads
from phone_sim.media.codecs import (
    CODECS,
    G722,
    PCMA,
    PCMU,
    CodecError,
    check_ptime,
    codec_for_payload_type,
    g711_table,
    get_codec,
)
from phone_sim.media.sinks import goertzel


def sine(rate: int, n: int, freq: float = 1000.0, amplitude: float = 8000.0) -> bytes:
    return array.array(
        "h", (round(amplitude * math.sin(2 * math.pi * freq * k / rate)) for k in range(n))
    ).tobytes()


@pytest.mark.parametrize(
    ("name", "codec"),
    [("PCMU", PCMU), ("pcmu", PCMU), ("PCMA/8000", PCMA), ("G722", G722), ("g722/8000", G722),
     ("ulaw", PCMU), ("alaw", PCMA)],
)
def test_get_codec_by_name(name: str, codec: object) -> None:
    assert get_codec(name) is codec


def test_get_codec_from_the_payload_table() -> None:
    for fmt in payloads.AUDIO_CODECS:
        codec = get_codec(fmt)
        assert codec.payload_type == fmt.payload_type
        assert codec.clock_rate == fmt.clock_rate
        assert codec.sample_rate == fmt.sample_rate
    with pytest.raises(CodecError, match="telephone-event"):
        get_codec(payloads.TELEPHONE_EVENT)


def test_unknown_codec_is_a_clear_error() -> None:
    with pytest.raises(payloads.UnknownCodecError, match="G729"):
        get_codec("G729")
    with pytest.raises(CodecError, match="payload type 18"):
        codec_for_payload_type(18)
    assert codec_for_payload_type(9) is G722


@pytest.mark.parametrize("bad", [0, 5, 25, 160, 210, -20])
def test_bad_ptime(bad: int) -> None:
    with pytest.raises(CodecError, match="ptime"):
        check_ptime(bad)


def test_longest_ptime_still_fits_an_srtp_packet() -> None:
    import os

    from phone_sim.media.sources import tone
    from phone_sim.media.srtp import SrtpContext

    check_ptime(150)
    payload = tone(G722, 1000, ptime_ms=150).frames[0]
    key = os.urandom(30)
    packet = SrtpContext(tx_key=key, rx_key=key).protect_rtp(b"\x80" + bytes(11) + payload)
    assert len(packet) <= 1500 - 48  # room for IPv6 + UDP headers


def test_g722_clock_is_8000_but_it_samples_at_16000() -> None:
    assert G722.timestamp_step(20) == 160
    assert G722.samples_per_frame(20) == 320
    assert PCMU.samples_per_frame(30) == 240


@pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))
def test_encode_decode_keeps_a_tone(codec: object) -> None:
    assert codec in CODECS.values()
    c = CODECS[codec.name]  # type: ignore[attr-defined]
    encoder, decoder = c.encoder(), c.decoder()
    n = c.samples_per_frame(20)
    pcm = b""
    for _ in range(3):  # G.722 needs a frame to settle
        payload = encoder.encode(sine(c.sample_rate, n))
        assert len(payload) == 160
        pcm = decoder.decode(payload)
    assert len(pcm) == 2 * n
    samples = array.array("h")
    samples.frombytes(pcm)
    ratio, level = goertzel(samples, 1000, c.sample_rate)
    assert ratio > 0.9
    assert -15 < level < -10  # 8000/32767 is -12.2 dBov


def test_g711_silence_and_table() -> None:
    assert PCMU.encoder().encode(bytes(320)) == b"\xff" * 160
    assert PCMA.encoder().encode(bytes(320)) == b"\xd5" * 160
    table = g711_table(PCMU)
    assert len(table) == 256 and table[0xFF] == 0 and table[0x00] == -32124
    decoder = PCMU.decoder()
    payload = PCMU.encoder().encode(sine(8000, 160))
    assert list(decoder.decode_samples(payload)) == list(array.array("h", decoder.decode(payload)))


def test_bad_pcm_frame() -> None:
    with pytest.raises(CodecError, match="whole 16-bit samples"):
        PCMU.encoder().encode(b"\x00")
    assert PCMU.decoder().decode(b"") == b""
