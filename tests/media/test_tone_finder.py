"""ToneFinder: a steady tone of any frequency is found in received audio, nothing else is."""

from __future__ import annotations

import random

import pytest

from phone_sim.media.codecs import G722, PCMA, PCMU, AudioCodec
from phone_sim.media.sinks import SinkError, ToneDetected, ToneFinder
from phone_sim.media.sources import AudioSource, tone


def _feed(finder: ToneFinder, source: AudioSource, packets: int) -> list[ToneDetected]:
    found = []
    step = source.codec.timestamp_step(source.ptime_ms)
    for i in range(packets):
        event = finder.on_audio(source.next_payload(), i * step, i * 0.02)
        if isinstance(event, ToneDetected):
            found.append(event)
    return found


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722], ids=lambda c: c.name)
@pytest.mark.parametrize("hz", [400, 697, 1004, 1400, 3000])
def test_a_steady_tone_is_found_at_its_frequency(codec: AudioCodec, hz: int) -> None:
    found = _feed(ToneFinder(codec), tone(codec, hz), 300)
    assert [e.frequency_hz for e in found] == [float(hz)]
    assert found[0].at < 3.0  # within the first three sampled windows


def test_each_tone_is_reported_once_and_a_new_one_again() -> None:
    finder = ToneFinder(PCMU)
    first = _feed(finder, tone(PCMU, 1004), 300)
    second = _feed(finder, tone(PCMU, 697), 300)
    assert [e.frequency_hz for e in first + second] == [1004.0, 697.0]
    assert finder.found == [1004.0, 697.0]


def test_silence_noise_and_two_tones_are_not_tones() -> None:
    rng = random.Random(4)
    noise = AudioSource(PCMU, 20, tuple(bytes(rng.getrandbits(8) for _ in range(160))
                                        for _ in range(50)), description="noise")
    silence = AudioSource(PCMU, 20, (b"\xff" * 160,), description="silence")  # PCMU's zero
    # DTMF "5": 770 Hz and 1336 Hz together, as a phone's keypad sends in-band.
    encoder = PCMU.encoder()
    decoder = PCMU.decoder()
    frames = []
    for a, b in zip(tone(PCMU, 770, level_dbov=-16).frames,
                    tone(PCMU, 1336, level_dbov=-16).frames, strict=False):
        pa, pb = decoder.decode_samples(a), decoder.decode_samples(b)
        pcm = b"".join(int(x + y).to_bytes(2, "little", signed=True) for x, y in zip(pa, pb,
                                                                                      strict=True))
        frames.append(encoder.encode(pcm))
    for source in (noise, silence, AudioSource(PCMU, 20, tuple(frames), description="DTMF 5")):
        assert _feed(ToneFinder(PCMU), source, 400) == []


def test_settings_are_checked() -> None:
    with pytest.raises(SinkError):
        ToneFinder(PCMU, sample_every=1, window_packets=2)
    with pytest.raises(SinkError):
        ToneFinder(PCMU, purity=1.5)


def test_a_tone_later_in_the_call_is_found_on_the_sparse_samples() -> None:
    finder = ToneFinder(PCMU)
    silence = AudioSource(PCMU, 20, (b"\xff" * 160,), description="silence")
    assert _feed(finder, silence, 1000) == []
    decoded = 0
    real_decoder = PCMU.decoder()

    class Counting:
        def decode_samples(self, payload: bytes, timestamp: int) -> object:
            nonlocal decoded
            decoded += 1
            return real_decoder.decode_samples(payload, timestamp)

    finder._decoder = Counting()  # type: ignore[assignment]
    source = tone(PCMU, 697)
    found = []
    for i in range(800):
        event = finder.on_audio(source.next_payload(), i * 160, 20.0 + i * 0.02)
        if isinstance(event, ToneDetected):
            found.append((i, event))
    assert [e.frequency_hz for _, e in found] == [697.0]
    # Sparse (every 250 packets) until the first hit, dense to confirm it, sparse again.
    assert found[0][0] <= 250 + 25
    assert decoded <= 2 * (800 // 250 + 2)
