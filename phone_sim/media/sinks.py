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


class ToneFinder:
    """Finds a steady pure tone of any frequency in what is received (the "tones heard" of a
    call's statistics, whoever asked for which tone), on a sample of the packets.

    Every ``sample_every`` packets it decodes ``window_packets`` consecutive packets (after
    ten warm-up packets for G.722), estimates the frequency from the upward zero crossings,
    interpolated between samples, refines it by the phase the tone turns through between the
    block's two halves, and checks with Goertzel that the block is that tone and nothing else
    (``purity``). The same frequency, within ``tolerance_hz``, in ``min_hits``
    windows in a row makes a :class:`ToneDetected`, rounded to the hertz, once per tone.

    It samples densely while the stream is young (``dense_windows`` windows, where tones
    usually are: milliwatt, ringback, a test extension's beep), then every
    ``later_every`` packets, densely again while a candidate waits for its next hit. A
    tone at the start is found in about a second; one later in the call in about
    ``min_hits * later_every`` packets. Measured: 0.3 ms of CPU per second of call while
    dense and 0.03 ms later (PCMU; G.722 costs about two and a half times that).
    """

    def __init__(
        self,
        codec: AudioCodec,
        *,
        sample_every: int = 25,
        dense_windows: int = 10,
        later_every: int = 250,
        window_packets: int = 2,
        min_hits: int = 2,
        purity: float = 0.8,
        tolerance_hz: float = 2.0,
        min_level_dbov: float = -50.0,
    ) -> None:
        # G.722 is ADPCM: a decoder that skipped packets needs about 200 ms to settle before
        # its output has the tone's exact frequency (measured on 400-3500 Hz: up to 6 Hz off
        # after 40 ms, within 0.6 Hz after 200 ms).
        self._warmup = 10 if codec.name == "G722" else 0
        if window_packets < 1 or min(sample_every, later_every) < window_packets + self._warmup:
            raise SinkError("a tone finder samples at least one packet, less often than that")
        if min_hits < 1 or not 0 < purity < 1:
            raise SinkError("min_hits must be >= 1 and purity in (0, 1)")
        self.codec = codec
        self.sample_every = sample_every
        self.dense_windows = dense_windows
        self.later_every = later_every
        self._windows = 0
        self.window_packets = window_packets
        self.min_hits = min_hits
        self.purity = purity
        self.tolerance_hz = tolerance_hz
        self.min_level_dbov = min_level_dbov
        self._decoder: AudioDecoder | None = None
        self._countdown = sample_every - 1
        self._block: list[array.array[int]] = []
        self._candidate: float | None = None
        self._hits = 0
        #: The tones reported so far, rounded to the hertz.
        self.found: list[float] = []

    def on_audio(self, payload: bytes, timestamp: int, now: float) -> SinkEvent | None:
        """Look at one payload if it falls in a sampled window."""
        if self._countdown > self.window_packets + self._warmup - 1:
            self._countdown -= 1
            return None
        if self._decoder is None:
            self._decoder = self.codec.decoder()
        samples = self._decoder.decode_samples(payload, timestamp)
        if self._countdown >= self.window_packets:  # a warm-up packet
            self._countdown -= 1
            return None
        self._block.append(samples)
        if self._countdown > 0:
            self._countdown -= 1
            return None
        block = array.array("h")
        for part in self._block:
            block.extend(part)
        self._block.clear()
        event = self.analyse(block, now)
        self._windows += 1
        dense = self._windows < self.dense_windows or 0 < self._hits < self.min_hits
        self._countdown = (self.sample_every if dense else self.later_every) - 1
        return event

    def analyse(self, samples: array.array[int], now: float) -> SinkEvent | None:
        """Check one block of decoded samples and update the state."""
        frequency = _crossing_frequency(samples, self.codec.sample_rate)
        if frequency is not None:
            frequency = _refined_frequency(samples, frequency, self.codec.sample_rate)
        hit = False
        if frequency is not None and 20 <= frequency < self.codec.sample_rate / 2:
            ratio, level = goertzel(samples, frequency, self.codec.sample_rate)
            hit = ratio >= self.purity and level >= self.min_level_dbov
        if not hit or frequency is None:
            self._candidate, self._hits = None, 0
            return None
        if self._candidate is None or abs(frequency - self._candidate) > self.tolerance_hz:
            self._candidate, self._hits = frequency, 1
        else:
            self._candidate = (self._candidate * self._hits + frequency) / (self._hits + 1)
            self._hits += 1
        if self._hits < self.min_hits:
            return None
        rounded = float(round(self._candidate))
        if any(abs(rounded - f) <= self.tolerance_hz for f in self.found):
            return None
        self.found.append(rounded)
        return ToneDetected(frequency_hz=rounded, level_dbov=level, at=now)


def _goertzel_phasor(samples: array.array[int], start: int, stop: int, omega: float) -> complex:
    # The DFT of samples[start:stop] at omega, up to a factor that depends on the length only.
    coeff = 2 * math.cos(omega)
    s1 = s2 = 0.0
    for i in range(start, stop):
        s0 = samples[i] + coeff * s1 - s2
        s2 = s1
        s1 = s0
    return complex(s1 - s2 * math.cos(omega), s2 * math.sin(omega))


def _refined_frequency(samples: array.array[int], estimate: float, sample_rate: int) -> float:
    """*estimate* corrected by the phase the tone turns through between the block's two
    halves, measured at *estimate* (exact to a fraction of a hertz for a pure tone within
    ``sample_rate / len(samples)`` of it)."""
    half = len(samples) // 2
    if half < 8:
        return estimate
    omega = 2 * math.pi * estimate / sample_rate
    first = _goertzel_phasor(samples, 0, half, omega)
    second = _goertzel_phasor(samples, half, 2 * half, omega)
    if first == 0 or second == 0:
        return estimate
    turned = math.atan2((second / first).imag, (second / first).real)
    expected = (omega * half + math.pi) % (2 * math.pi) - math.pi
    delta = (turned - expected + math.pi) % (2 * math.pi) - math.pi
    return estimate + delta * sample_rate / (2 * math.pi * half)


def _crossing_frequency(samples: array.array[int], sample_rate: int) -> float | None:
    """The frequency of a periodic block from its upward zero crossings, each placed by
    linear interpolation between the two samples around it; None without four of them."""
    first = last = -1.0
    count = 0
    previous = samples[0] if samples else 0
    for i in range(1, len(samples)):
        current = samples[i]
        if previous < 0 <= current:
            at = i - 1 + previous / (previous - current)
            if count == 0:
                first = at
            last = at
            count += 1
        previous = current
    if count < 4 or last <= first:
        return None
    return (count - 1) * sample_rate / (last - first)


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
