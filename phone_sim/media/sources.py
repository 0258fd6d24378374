"""Audio sources: what a phone sends. Every source is encoded once, up front.

The hot path of a stream only takes the next pre-encoded payload from a tuple, so a tone or a
WAV file costs no synthesis and no encoding per packet, however many calls run.
"""

from __future__ import annotations

import array
import functools
import math
import sys
from math import gcd
from pathlib import Path

from phone_sim.errors import UsageError
from phone_sim.media.codecs import AudioCodec, check_ptime

#: The loudest tone we make, in dBov; 0 dBov is a full-scale sine.
MAX_TONE_LEVEL_DBOV = 0.0
#: aiortc's encoders work in frames of this length.
ENCODER_FRAME_MS = 20
#: Longest WAV file loaded (it is held encoded in memory).
MAX_WAV_SECONDS = 600


class SourceError(UsageError):
    """A source cannot be built from what was asked (bad frequency, unreadable file)."""


class AudioSource:
    """A loop of pre-encoded payloads, one per packet."""

    __slots__ = ("_index", "codec", "description", "frames", "ptime_ms")

    def __init__(
        self, codec: AudioCodec, ptime_ms: int, frames: tuple[bytes, ...], *, description: str
    ) -> None:
        if not frames:
            raise SourceError(f"{description}: no audio frames")
        self.codec = codec
        self.ptime_ms = ptime_ms
        #: Encoded payloads, played in order and looped.
        self.frames = frames
        #: What this source plays, for logs.
        self.description = description
        self._index = 0

    def __repr__(self) -> str:
        return f"<AudioSource {self.description} {self.codec.name}/{self.ptime_ms}ms>"

    def next_payload(self) -> bytes:
        """The payload for the next packet."""
        frames = self.frames
        index = self._index
        self._index = index + 1 if index + 1 < len(frames) else 0
        return frames[index]


def _to_bytes(samples: array.array[int]) -> bytes:
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def _encode(
    codec: AudioCodec, ptime_ms: int, pcm: bytes, *, warmup: bytes = b""
) -> tuple[bytes, ...]:
    """Encode PCM as one continuous stream, then cut it into ptime payloads.

    aiortc's encoders emit 20 ms frames whatever they are fed, and all three codecs make 8 bytes
    per millisecond, so the encoded stream is cut at ``8 * ptime_ms`` bytes. ``warmup`` is
    encoded first and dropped (G.722 is adaptive). Both lengths are whole 20 ms frames.
    """
    encoder = codec.encoder()
    chunk = codec.samples_per_frame(ENCODER_FRAME_MS) * 2
    for start in range(0, len(warmup), chunk):
        encoder.encode(warmup[start : start + chunk])
    encoded = b"".join(
        encoder.encode(pcm[start : start + chunk]) for start in range(0, len(pcm), chunk)
    )
    size = codec.payload_size(ptime_ms)
    return tuple(encoded[start : start + size] for start in range(0, len(encoded) - size + 1, size))


@functools.lru_cache(maxsize=32)
def _silence_frame(codec: AudioCodec, ptime_ms: int) -> bytes:
    return _encode(codec, ptime_ms, bytes(codec.samples_per_frame(ptime_ms * 4) * 2 * 5))[-1]


def silence(codec: AudioCodec, ptime_ms: int = 20) -> AudioSource:
    """Digital silence in the codec (0xFF for PCMU, 0xD5 for PCMA, encoded zeros for G.722)."""
    check_ptime(ptime_ms)
    return AudioSource(codec, ptime_ms, (_silence_frame(codec, ptime_ms),), description="silence")


def tone(
    codec: AudioCodec, frequency_hz: float, *, ptime_ms: int = 20, level_dbov: float = -10.0
) -> AudioSource:
    """A continuous sine tone, pre-encoded as a seamless loop.

    The loop lasts a whole number of packets and of seconds, so an integer frequency wraps with
    no phase jump; a fractional one has at most one small jump per loop.
    """
    check_ptime(ptime_ms)
    nyquist = codec.sample_rate / 2
    if not (isinstance(frequency_hz, int | float) and 20 <= frequency_hz < nyquist):
        raise SourceError(
            f"tone frequency {frequency_hz!r} Hz must be in 20-{nyquist:g} Hz for {codec.name}"
        )
    if not -60.0 <= level_dbov <= MAX_TONE_LEVEL_DBOV:
        raise SourceError(f"tone level {level_dbov} dBov must be in -60..0 dBov")
    frames = _tone_frames(codec, float(frequency_hz), ptime_ms, float(level_dbov))
    return AudioSource(
        codec, ptime_ms, frames, description=f"tone {frequency_hz:g} Hz {level_dbov:g} dBov"
    )


# Encoded frames are immutable and shared: a thousand phones playing the same tone encode it
# once. Each AudioSource keeps its own position.
@functools.lru_cache(maxsize=256)
def _tone_frames(
    codec: AudioCodec, frequency_hz: float, ptime_ms: int, level_dbov: float
) -> tuple[bytes, ...]:
    amplitude = 32767 * 10 ** (level_dbov / 20)
    # Frames in a loop of a whole number of seconds (1 s at 20 ms, 3 s at 30 ms...).
    loop_ms = 1000 * ptime_ms // gcd(1000, ptime_ms)
    samples = codec.sample_rate * loop_ms // 1000
    step = 2 * math.pi * frequency_hz / codec.sample_rate
    one_loop = _to_bytes(
        array.array("h", (round(amplitude * math.sin(step * n)) for n in range(samples)))
    )
    # G.722 is ADPCM: encode one loop to settle its predictor, keep the second.
    return _encode(codec, ptime_ms, one_loop, warmup=one_loop)


def wav_file(
    path: str | Path, codec: AudioCodec, *, ptime_ms: int = 20
) -> AudioSource:
    """A WAV (or any audio file PyAV reads), resampled to the codec's rate, mono, looped."""
    check_ptime(ptime_ms)
    import av  # noqa: PLC0415 - only needed for files

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"audio file {str(path)!r} does not exist or is not a file")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=codec.sample_rate)
    pcm = bytearray()
    limit = MAX_WAV_SECONDS * codec.sample_rate * 2
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise SourceError(f"{str(path)!r} has no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pcm += bytes(out.planes[0])[: out.samples * 2]
                if len(pcm) > limit:
                    raise SourceError(f"{str(path)!r} is longer than {MAX_WAV_SECONDS} s")
            for out in resampler.resample(None):
                pcm += bytes(out.planes[0])[: out.samples * 2]
    except av.error.FFmpegError as exc:
        # strerror: FFmpeg's words without its errno and the path again.
        raise SourceError(f"cannot read audio file {str(path)!r}: {exc.strerror or exc}") from None
    size = codec.samples_per_frame(ptime_ms) * 2
    if len(pcm) < size:
        raise SourceError(f"{str(path)!r} holds less than one {ptime_ms} ms frame of audio")
    # Pad with silence to whole packets and whole encoder frames.
    block_ms = ptime_ms * ENCODER_FRAME_MS // gcd(ptime_ms, ENCODER_FRAME_MS)
    block = codec.samples_per_frame(block_ms) * 2
    pcm += bytes(-len(pcm) % block)
    frames = _encode(codec, ptime_ms, bytes(pcm))
    return AudioSource(codec, ptime_ms, frames, description=f"file {path.name}")
