"""Test audio: write tone WAV files, read recordings, and find a tone with Goertzel.

baresip's ``aufile`` source does not resample, so tone files are written at the codec rate
(8 kHz mono S16LE for PCMU). :func:`tone_report` tells how strong a frequency is in a
recording compared with the rest of the signal, which is what proves audio went through.
"""

from __future__ import annotations

import array
import math
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from phone_sim.testing.errors import PeerUsageError

__all__ = [
    "ULAW_TABLE",
    "ToneReport",
    "WavAudio",
    "goertzel_power",
    "read_wav",
    "tone_report",
    "tone_samples",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_encode_sample",
    "wav_tone_report",
    "write_tone_wav",
    "write_wav",
]


def tone_samples(
    frequency: float, seconds: float, *, rate: int = 8000, amplitude: float = 0.5
) -> array.array[int]:
    """A sine tone as signed 16-bit samples."""
    if not 0 < frequency < rate / 2:
        raise PeerUsageError(f"tone {frequency} Hz is not below the Nyquist limit of {rate / 2} Hz")
    if not 0 < amplitude <= 1:
        raise PeerUsageError("amplitude must be in (0, 1]")
    count = round(seconds * rate)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / rate
    return array.array("h", (round(peak * math.sin(step * n)) for n in range(count)))


def write_wav(path: Path, samples: Sequence[int], *, rate: int = 8000) -> Path:
    """Write mono S16LE ``samples`` to a WAV file."""
    data = array.array("h", samples)
    if sys.byteorder != "little":
        data.byteswap()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data.tobytes())
    return path


def write_tone_wav(
    path: Path, frequency: float, seconds: float = 10.0, *, rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Write a mono S16LE WAV with a sine tone (default 10 s at 8 kHz, for PCMU)."""
    return write_wav(path, tone_samples(frequency, seconds, rate=rate, amplitude=amplitude),
                     rate=rate)


@dataclass(frozen=True, kw_only=True)
class WavAudio:
    """Mono samples read from a WAV file."""

    rate: int
    """Sample rate in Hz."""
    samples: array.array[int]
    """Signed 16-bit samples (the first channel)."""

    @property
    def seconds(self) -> float:
        """Duration."""
        return len(self.samples) / self.rate if self.rate else 0.0


def read_wav(path: Path) -> WavAudio:
    """Read a 16-bit PCM WAV file (first channel if several)."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise PeerUsageError(f"{path}: {8 * src.getsampwidth()}-bit samples, expected 16-bit")
        channels = src.getnchannels()
        rate = src.getframerate()
        raw = src.readframes(src.getnframes())
    data = array.array("h")
    data.frombytes(raw[: len(raw) - len(raw) % 2])
    if sys.byteorder != "little":
        data.byteswap()
    if channels > 1:
        data = data[::channels]
    return WavAudio(rate=rate, samples=data)


def goertzel_power(samples: Sequence[float], frequency: float, rate: int) -> float:
    """The power of ``frequency`` in ``samples`` (Goertzel), normalised by length squared."""
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    return max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 0.0) / (n * n)


@dataclass(frozen=True, kw_only=True)
class ToneReport:
    """How much of a signal is one tone."""

    frequency: float
    """The tone looked for, Hz."""
    tone_ratio: float
    """Tone power / total power over the best window: about 1.0 for a pure tone, ~0 if absent."""
    level_dbfs: float
    """RMS level of that window, dBFS (-inf for silence)."""
    windows_with_tone: int
    """How many analysis windows held the tone (ratio above 0.5)."""
    windows: int
    """How many windows were analysed."""

    @property
    def present(self) -> bool:
        """True when the tone dominates at least one window at an audible level."""
        return self.tone_ratio > 0.5 and self.level_dbfs > -50


def tone_report(
    samples: Sequence[int], frequency: float, rate: int, *, window: float = 0.1
) -> ToneReport:
    """Look for ``frequency`` in windows of ``window`` seconds (Goertzel vs. total power)."""
    size = max(int(rate * window), 8)
    best_ratio, best_level, hits, count = 0.0, float("-inf"), 0, 0
    for start in range(0, len(samples) - size + 1, size):
        chunk = [float(s) for s in samples[start : start + size]]
        count += 1
        energy = sum(x * x for x in chunk) / size
        if energy <= 0:
            continue
        # A sine of amplitude A has mean power A^2/2; Goertzel gives (A/2)^2, so times 2.
        ratio = min(2 * goertzel_power(chunk, frequency, rate) / energy, 1.0)
        if ratio > 0.5:
            hits += 1
        if ratio > best_ratio:
            best_ratio = ratio
            best_level = 10 * math.log10(energy / (32768.0 * 32768.0)) + 3.01
    return ToneReport(
        frequency=frequency, tone_ratio=best_ratio, level_dbfs=best_level,
        windows_with_tone=hits, windows=count,
    )


def wav_tone_report(path: Path, frequency: float) -> ToneReport:
    """:func:`tone_report` on a WAV file (e.g. a baresip recording)."""
    audio = read_wav(path)
    return tone_report(audio.samples, frequency, audio.rate)


# G.711 mu-law, for checking whether captured RTP payloads carry the tone in the clear.
def _ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


ULAW_TABLE = tuple(_ulaw_to_linear(b) for b in range(256))


def ulaw_decode(payload: bytes) -> list[int]:
    """Decode G.711 mu-law bytes to 16-bit samples."""
    return [ULAW_TABLE[b] for b in payload]


def ulaw_encode_sample(sample: int) -> int:
    """Encode one 16-bit sample to mu-law (G.711, for building test payloads)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    for exp in range(7, -1, -1):
        if magnitude & (0x4000 >> (7 - exp)):
            exponent = exp
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_encode(samples: Sequence[int]) -> bytes:
    """Encode 16-bit samples to mu-law bytes."""
    return bytes(ulaw_encode_sample(s) for s in samples)
