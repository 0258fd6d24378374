"""Tone files, WAV reading, Goertzel detection and G.711 mu-law used by the peer tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.testing.audio import (
    read_wav,
    tone_report,
    tone_samples,
    ulaw_decode,
    ulaw_encode,
    ulaw_encode_sample,
    wav_tone_report,
    write_tone_wav,
    write_wav,
)


def test_tone_wav_round_trips_at_8_khz(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "t.wav", 1004, 0.5)
    audio = read_wav(path)
    assert audio.rate == 8000
    assert audio.seconds == pytest.approx(0.5)
    assert list(audio.samples) == list(tone_samples(1004, 0.5))


def test_detects_the_tone_it_wrote_and_not_another(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "t.wav", 1004, 1.0)
    heard = wav_tone_report(path, 1004)
    assert heard.present
    assert heard.windows_with_tone == heard.windows == 10
    assert heard.level_dbfs == pytest.approx(-6.0, abs=0.2)
    assert not wav_tone_report(path, 697).present
    assert wav_tone_report(path, 697).tone_ratio < 0.01


def test_noise_and_silence_hold_no_tone(tmp_path: Path) -> None:
    rng = random.Random(4)
    noise = [rng.randint(-8000, 8000) for _ in range(8000)]
    assert not tone_report(noise, 1004, 8000).present
    silence = write_wav(tmp_path / "s.wav", [0] * 8000)
    report = wav_tone_report(silence, 1004)
    assert not report.present
    assert report.windows_with_tone == 0


def test_a_quiet_tone_is_not_present() -> None:
    quiet = tone_samples(1004, 0.5, amplitude=0.001)  # about -66 dBFS
    report = tone_report(quiet, 1004, 8000)
    assert report.tone_ratio > 0.9
    assert not report.present


def test_tone_mixed_with_its_partner_is_still_found() -> None:
    a, b = tone_samples(1004, 0.5, amplitude=0.4), tone_samples(697, 0.5, amplitude=0.1)
    mixed = [x + y for x, y in zip(a, b, strict=True)]
    assert tone_report(mixed, 1004, 8000).present
    assert not tone_report(mixed, 697, 8000).present


def test_bad_tone_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        tone_samples(5000, 1.0)
    with pytest.raises(ValueError, match="amplitude"):
        tone_samples(1000, 1.0, amplitude=2)


def test_read_wav_refuses_8_bit(tmp_path: Path) -> None:
    import wave

    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80" * 100)
    with pytest.raises(ValueError, match="8-bit"):
        read_wav(path)


def test_ulaw_matches_g711_reference_points() -> None:
    # ITU-T G.711 mu-law: 0 -> 0xFF, full scale positive -> 0x80, full negative -> 0x00.
    assert ulaw_encode_sample(0) == 0xFF
    assert ulaw_encode_sample(32767) == 0x80
    assert ulaw_encode_sample(-32768) == 0x00
    assert ulaw_decode(b"\xff\x7f") == [0, 0]
    assert ulaw_decode(b"\x80") == [32124]


@given(st.integers(min_value=-32768, max_value=32767))
def test_ulaw_round_trip_error_is_bounded(sample: int) -> None:
    (decoded,) = ulaw_decode(ulaw_encode([sample]))
    # mu-law step size grows with magnitude: at most 1/16 of the value plus the bias.
    assert abs(decoded - sample) <= abs(sample) / 16 + 132


def test_a_plain_pcmu_packet_of_the_tone_is_recognised() -> None:
    # The positive control for the SRTP wire check: 20 ms of the tone in clear is detected.
    payload = ulaw_encode(tone_samples(1004, 0.02))
    assert tone_report(ulaw_decode(payload), 1004, 8000, window=0.02).present
