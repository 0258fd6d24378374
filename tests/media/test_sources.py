"""Sources are pre-encoded: the hot path only indexes a tuple."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

import pytest

from phone_sim.errors import UsageError
from phone_sim.media.codecs import G722, PCMA, PCMU
from phone_sim.media.sinks import goertzel
from phone_sim.media.sources import SourceError, silence, tone, wav_file


def decoded(codec: object, frames: tuple[bytes, ...]) -> array.array[int]:
    decoder = codec.decoder()  # type: ignore[attr-defined]
    out = array.array("h")
    for f in frames:
        out.frombytes(decoder.decode(f))
    return out


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722], ids=["PCMU", "PCMA", "G722"])
def test_tone_is_a_seamless_second_of_the_right_frequency(codec: object) -> None:
    src = tone(codec, 1000, ptime_ms=20)  # type: ignore[arg-type]
    assert len(src.frames) == 50
    assert all(len(f) == 160 for f in src.frames)
    samples = decoded(codec, src.frames * 2)
    rate = codec.sample_rate  # type: ignore[attr-defined]
    # Look across the loop boundary too: the tone must still be pure there.
    block = samples[len(samples) // 2 - rate // 100 : len(samples) // 2 + rate // 100]
    ratio, level = goertzel(block, 1000, rate)
    assert ratio > 0.9
    assert -12 < level < -8
    other, _ = goertzel(block, 1633, rate)
    assert other < 0.01


def test_ptime_30_loops_over_three_seconds() -> None:
    assert len(tone(PCMU, 440, ptime_ms=30).frames) == 100


def test_next_payload_cycles() -> None:
    src = tone(PCMU, 500)
    first = [src.next_payload() for _ in range(50)]
    assert first == list(src.frames)
    assert src.next_payload() == src.frames[0]


def test_silence() -> None:
    assert silence(PCMU).frames == (b"\xff" * 160,)
    assert silence(PCMA, 30).frames == (b"\xd5" * 240,)
    g722 = silence(G722)
    assert len(g722.frames[0]) == 160


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frequency_hz": 5}, "20-4000 Hz"),
    ({"frequency_hz": 4000}, "20-4000 Hz"),
    ({"frequency_hz": 1000, "level_dbov": 3}, "level 3 dBov"),
    ({"frequency_hz": 1000, "ptime_ms": 15}, "ptime 15"),
])
def test_bad_tone(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        tone(PCMU, **kwargs)  # type: ignore[arg-type]


def write_wav(path: Path, rate: int, seconds: float, freq: float) -> None:
    n = int(rate * seconds)
    pcm = array.array(
        "h", (round(8000 * math.sin(2 * math.pi * freq * k / rate)) for k in range(n))
    ).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


@pytest.mark.parametrize("codec", [PCMU, G722], ids=["PCMU", "G722"])
def test_wav_file_is_resampled_and_encoded(tmp_path: Path, codec: object) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, 44100, 0.5, 800)
    src = wav_file(path, codec)  # type: ignore[arg-type]
    assert len(src.frames) == 25
    samples = decoded(codec, src.frames)
    rate = codec.sample_rate  # type: ignore[attr-defined]
    ratio, _ = goertzel(samples[rate // 10 : rate // 5], 800, rate)
    assert ratio > 0.8


def test_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        wav_file(tmp_path / "missing.wav", PCMU)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(SourceError, match="cannot read audio file"):
        wav_file(junk, PCMU)
    short = tmp_path / "short.wav"
    write_wav(short, 8000, 0.001, 440)
    with pytest.raises(SourceError, match="less than one 20 ms frame"):
        wav_file(short, PCMU)
