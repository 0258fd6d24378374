"""Audio sinks: what a phone does with what it hears, and the events that prove it heard.

Sinks see each received audio payload with its RTP timestamp and the arrival time. Those that
decode are expensive, so the tone detector only looks at a sample of the packets: a short
window of consecutive packets every ``sample_every`` packets.
"""

from __future__ import annotations

import array
import io
import math
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

from phone_sim.errors import UsageError
from phone_sim.media.codecs import AudioCodec, AudioDecoder
from phone_sim.media.dtmf import DtmfReceiver


class SinkError(UsageError):
    """A sink was configured with impossible parameters."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToneDetected:
    """The expected tone has been heard in ``min_hits`` sampled windows in a row."""

    #: The frequency the detector listens for, in Hz.
    frequency_hz: float
    #: The tone's level in the last window, in dBov.
    level_dbov: float
    #: When (on the stream's clock) it was detected.
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ToneLost:
    """A tone that had been detected has been absent for ``min_hits`` sampled windows."""

    #: The frequency the detector listens for, in Hz.
    frequency_hz: float
    #: When (on the stream's clock) it was lost.
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class DtmfReceived:
    """The peer sent an RFC 4733 DTMF digit."""

    #: The digit, ``0-9 * # A-D``.
    digit: str
    #: Its duration in milliseconds, as the sender reported it.
    duration_ms: float
    #: When (on the stream's clock) it completed.
    at: float


SinkEvent = ToneDetected | ToneLost | DtmfReceived


def _samples(pcm: bytes) -> array.array[int]:
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder != "little":
        samples.byteswap()
    return samples


def goertzel(
    samples: array.array[int], frequency_hz: float, sample_rate: int
) -> tuple[float, float]:
    """``(ratio, level_dbov)`` of one frequency in a block of s16 samples.

    ``ratio`` is the share of the block's energy at that frequency: about 1 for a pure tone at
    the frequency, near 0 for silence, noise or another tone.
    """
    n = len(samples)
    if n == 0:
        return 0.0, -math.inf
    coeff = 2 * math.cos(2 * math.pi * frequency_hz / sample_rate)
    s1 = s2 = 0.0
    energy = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
        energy += x * x
    if energy <= 0:
        return 0.0, -math.inf
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    ratio = power / (energy * n / 2)
    rms = math.sqrt(energy / n)
    level = 20 * math.log10(rms * math.sqrt(2) / 32767) if rms else -math.inf
    return ratio, level


class NullSink:
    """Discards everything."""

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        """Ignore one payload."""
        return None


class ToneDetector:
    """Goertzel detector for one frequency, on a sample of the packets.

    Every ``sample_every`` packets it decodes ``warmup_packets + 1`` consecutive packets (G.722
    is ADPCM, so a fresh decoder needs a packet to settle; G.711 needs none) and checks the last
    one. ``min_hits`` matching windows in a row make a :class:`ToneDetected`, as many misses in
    a row after that a :class:`ToneLost`.
    """

    def __init__(
        self,
        codec: AudioCodec,
        frequency_hz: float,
        *,
        sample_every: int = 50,
        min_hits: int = 3,
        threshold: float = 0.5,
        min_level_dbov: float = -50.0,
    ) -> None:
        if not 20 <= frequency_hz < codec.sample_rate / 2:
            raise SinkError(f"tone frequency {frequency_hz} Hz is out of range for {codec.name}")
        self._warmup = 1 if codec.name == "G722" else 0
        if sample_every < self._warmup + 1:
            raise SinkError(f"sample_every must be at least {self._warmup + 1}")
        if min_hits < 1 or not 0 < threshold < 1:
            raise SinkError("min_hits must be >= 1 and threshold in (0, 1)")
        self.codec = codec
        self.frequency_hz = float(frequency_hz)
        self.sample_every = sample_every
        self.min_hits = min_hits
        self.threshold = threshold
        self.min_level_dbov = min_level_dbov
        self._countdown = self._warmup
        self._decoder: AudioDecoder | None = None
        self._run = 0
        #: Whether the tone is currently considered present.
        self.detected = False
        #: Windows analysed and windows in which the tone was found.
        self.windows_checked = 0
        self.windows_matched = 0
        #: The last window's ratio and level, for diagnostics.
        self.last_ratio = 0.0
        self.last_level_dbov = -math.inf

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        """Look at one payload if it falls in a sampled window."""
        countdown = self._countdown
        if countdown > self._warmup:
            self._countdown = countdown - 1
            return None
        return self._sampled(payload, timestamp, now)

    def _sampled(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        # One decoder for the detector's life: creating one costs more than decoding.
        if self._decoder is None:
            self._decoder = self.codec.decoder()
        samples = self._decoder.decode_samples(payload, timestamp)
        if self._countdown > 0:  # a warm-up packet
            self._countdown -= 1
            return None
        self._countdown = self.sample_every - 1
        return self.analyse(samples, now)

    def analyse(self, samples: array.array[int], now: float) -> SinkEvent | None:
        """Check one block of decoded samples and update the detection state."""
        ratio, level = goertzel(samples, self.frequency_hz, self.codec.sample_rate)
        self.windows_checked += 1
        self.last_ratio, self.last_level_dbov = ratio, level
        hit = ratio >= self.threshold and level >= self.min_level_dbov
        if hit:
            self.windows_matched += 1
        if hit != self.detected:
            self._run += 1
            if self._run >= self.min_hits:
                self._run = 0
                self.detected = hit
                if hit:
                    return ToneDetected(frequency_hz=self.frequency_hz, level_dbov=level, at=now)
                return ToneLost(frequency_hz=self.frequency_hz, at=now)
        else:
            self._run = 0
        return None


class WavRecorder:
    """Decodes every packet into memory and writes a WAV file at the end.

    Gaps in the RTP timestamps (lost packets, silence suppression) are filled with silence, up
    to ``max_gap`` seconds per gap; the recording stops growing at ``max_seconds``.
    """

    def __init__(
        self, codec: AudioCodec, *, max_seconds: float = 600.0, max_gap: float = 1.0
    ) -> None:
        self.codec = codec
        self._decoder = codec.decoder()
        self._pcm = bytearray()
        self._limit = int(max_seconds * codec.sample_rate) * 2
        self._max_gap = int(max_gap * codec.clock_rate)
        self._next_timestamp: int | None = None
        # PCM samples per RTP clock tick (2 for G.722).
        self._ratio = codec.sample_rate // codec.clock_rate

    @property
    def seconds(self) -> float:
        """Length of the recording so far."""
        return len(self._pcm) / 2 / self.codec.sample_rate

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        """Decode and keep one payload."""
        if len(self._pcm) >= self._limit:
            return None
        pcm = self._decoder.decode(payload, timestamp)
        if self._next_timestamp is not None:
            gap = (timestamp - self._next_timestamp) & 0xFFFFFFFF
            if 0 < gap <= self._max_gap:
                self._pcm += bytes(gap * self._ratio * 2)
            elif gap > 0x80000000:  # late packet: already covered, drop it
                return None
        self._next_timestamp = (timestamp + len(pcm) // 2 // self._ratio) & 0xFFFFFFFF
        self._pcm += pcm
        return None

    def wav_bytes(self) -> bytes:
        """The recording as a 16-bit mono WAV file."""
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.codec.sample_rate)
            wav.writeframes(bytes(self._pcm[: self._limit]))
        return out.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the recording to ``path``."""
        try:
            Path(path).write_bytes(self.wav_bytes())
        except OSError as exc:
            raise SinkError(f"cannot write WAV file {str(path)!r}: {exc.strerror}") from None


class DtmfDetector:
    """Collects RFC 4733 digits from telephone-event payloads."""

    def __init__(self, *, clock_rate: int = 8000) -> None:
        self._receiver = DtmfReceiver(clock_rate=clock_rate)
        #: Every digit received so far, in order.
        self.digits = ""

    @property
    def malformed(self) -> int:
        """Telephone-event payloads that could not be parsed."""
        return self._receiver.malformed

    def on_event_payload(self, payload: bytes, timestamp: int, now: float) -> list[DtmfReceived]:
        """Feed one telephone-event payload; return the digits it completes."""
        done = []
        for digit in self._receiver.receive(payload, timestamp):
            self.digits += digit.digit
            done.append(DtmfReceived(digit=digit.digit, duration_ms=digit.duration_ms, at=now))
        return done
