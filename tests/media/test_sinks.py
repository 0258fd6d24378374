"""Sinks: Goertzel tone detection on sampled packets, WAV recording, DTMF, null."""

from __future__ import annotations

import array
import io
import math
import wave
from pathlib import Path

import pytest

from phone_sim.media.codecs import G722, PCMU
from phone_sim.media.dtmf import dtmf_packets
from phone_sim.media.sinks import (
    DtmfDetector,
    NullSink,
    SinkError,
    ToneDetected,
    ToneDetector,
    ToneLost,
    WavRecorder,
    goertzel,
)
from phone_sim.media.sources import silence, tone


def block(freq: float, rate: int = 8000, n: int = 160, amplitude: float = 1e4) -> array.array[int]:
    return array.array("h", (round(amplitude * math.sin(2 * math.pi * freq * k / rate))
                             for k in range(n)))


def test_goertzel_separates_frequencies() -> None:
    ratio, level = goertzel(block(1000), 1000, 8000)
    assert ratio > 0.99 and -10.5 < level < -10
    assert goertzel(block(1400), 1000, 8000)[0] < 0.02
    assert goertzel(array.array("h", [0] * 160), 1000, 8000) == (0.0, -math.inf)
    assert goertzel(array.array("h"), 1000, 8000)[0] == 0.0


def test_goertzel_rejects_noise() -> None:
    import random

    rng = random.Random(1)
    noise = array.array("h", (rng.randint(-8000, 8000) for _ in range(160)))
    assert goertzel(noise, 1000, 8000)[0] < 0.2


@pytest.mark.parametrize("codec", [PCMU, G722], ids=["PCMU", "G722"])
def test_detector_samples_and_reports_once(codec: object) -> None:
    src = tone(codec, 1000)  # type: ignore[arg-type]
    det = ToneDetector(codec, 1000, sample_every=10, min_hits=3)  # type: ignore[arg-type]
    events = []
    for i in range(100):
        event = det.on_audio(src.next_payload(), i * 160, i * 0.02)
        if event:
            events.append(event)
    assert len(events) == 1 and isinstance(events[0], ToneDetected)
    assert det.windows_checked == 10
    assert det.windows_matched == 10
    assert det.detected
    # Then silence: the tone is lost once.
    quiet = silence(codec)  # type: ignore[arg-type]
    lost = [e for i in range(100) if (e := det.on_audio(quiet.next_payload(), i, i * 0.02))]
    assert len(lost) == 1 and isinstance(lost[0], ToneLost)


def test_detector_ignores_another_tone() -> None:
    src = tone(PCMU, 1633)
    det = ToneDetector(PCMU, 1000, sample_every=2)
    assert not [e for i in range(60) if (e := det.on_audio(src.next_payload(), i, 0.0))]
    assert det.windows_matched == 0 and det.windows_checked == 30


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frequency_hz": 5000}, "out of range"),
    ({"frequency_hz": 1000, "sample_every": 0}, "sample_every"),
    ({"frequency_hz": 1000, "threshold": 1.5}, "threshold"),
])
def test_detector_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SinkError, match=message):
        ToneDetector(PCMU, **kwargs)  # type: ignore[arg-type]


def test_wav_recorder_fills_gaps(tmp_path: Path) -> None:
    src = tone(PCMU, 1000)
    rec = WavRecorder(PCMU)
    for i in range(10):
        payload = src.next_payload()
        if i != 4:  # one packet lost: 20 ms of silence in its place
            rec.on_audio(payload, 1000 + i * 160, i * 0.02)
    rec.on_audio(src.frames[0], 1000 + 2 * 160, 0.3)  # a late duplicate: dropped
    assert rec.seconds == pytest.approx(0.2)
    with wave.open(io.BytesIO(rec.wav_bytes())) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        frames = w.readframes(w.getnframes())
    samples = array.array("h")
    samples.frombytes(frames)
    assert not any(samples[4 * 160 : 5 * 160])
    assert goertzel(samples[0:160], 1000, 8000)[0] > 0.9
    path = tmp_path / "out.wav"
    rec.save(path)
    assert path.read_bytes() == rec.wav_bytes()
    with pytest.raises(SinkError, match="cannot write WAV file"):
        rec.save(tmp_path / "no" / "such" / "dir.wav")


def test_wav_recorder_limit() -> None:
    rec = WavRecorder(G722, max_seconds=0.05)
    src = tone(G722, 500)
    for i in range(10):
        rec.on_audio(src.next_payload(), i * 160, 0.0)
    assert rec.seconds <= 0.061


def test_dtmf_detector_and_null() -> None:
    det = DtmfDetector()
    for ts, digit in ((0, "*"), (8000, "0")):
        for p in dtmf_packets(digit):
            det.on_event_payload(p.payload, ts, 1.0)
    assert det.digits == "*0"
    assert det.malformed == 0
    assert NullSink().on_audio(b"x", 0, 0.0) is None
