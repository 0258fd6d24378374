"""SRTP and SRTCP for one call leg, over pylibsrtp (RFC 3711, RFC 4568 key material).

The phone only ever uses ``AES_CM_128_HMAC_SHA1_80`` (PROTOCOL-NOTES §5). SDES hands each
direction 30 bytes of key material: a 16-byte master key followed by a 14-byte master salt,
which is exactly what libsrtp takes.

What the peer sends may fail to authenticate (a wrong key, a tampered packet), be a replay, or,
for RTCP, arrive unprotected: baresip sends a plain RTCP packet at the start of a call and
BYE/SDES at hangup. Unprotected RTCP is counted apart (``rtcp_unprotected``), so that an
authentication failure still means a wrong key or tampering. Every such packet is counted and
dropped: the ``unprotect_*`` methods return ``None`` and never raise, so a bad packet can never
end a call.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

from phone_sim.errors import UsageError

#: The one crypto suite the D-Series firmware offers and accepts.
SUITE = "AES_CM_128_HMAC_SHA1_80"
#: SDES key material per direction: 16-byte master key + 14-byte master salt.
KEY_MATERIAL_LENGTH = 30
#: Bytes SRTP adds to an RTP packet (the 80-bit tag).
SRTP_AUTH_TAG_LENGTH = 10
#: Bytes SRTCP adds to an RTCP packet (E flag + 31-bit index, then the 80-bit tag).
SRTCP_TRAILER_LENGTH = 4 + 10
#: RTCP packet types in use (RFC 3550 SR, RR, SDES, BYE, APP; RFC 4585 RTPFB, PSFB; RFC 3611 XR).
_RTCP_TYPES = range(200, 208)
#: libsrtp's working buffer is 1500 bytes including the trailer it appends.
MAX_RTP_LENGTH = 1500 - pylibsrtp.SRTP_MAX_TRAILER_LEN
MAX_RTCP_LENGTH = 1500 - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN

# libsrtp status texts, as pylibsrtp raises them, sorted into what we count.
_AUTH_FAILURES = frozenset({"authentication failure"})
_REPLAY_FAILURES = frozenset(
    {"replay check failed (bad index)", "replay check failed (index too old)"}
)


class SrtpKeyError(UsageError):
    """The SRTP key material handed to the media layer is not usable."""


class SrtpPacketError(UsageError):
    """A packet we were asked to protect cannot be protected (too long, not bytes)."""


@dataclass(slots=True)
class SrtpCounters:
    """What the unprotect side dropped, by reason. Mutable: the context updates it."""

    #: RTP packets whose authentication tag did not verify.
    rtp_auth_failures: int = 0
    #: RTP packets rejected by the replay window (a repeat or too old).
    rtp_replay_failures: int = 0
    #: SRTCP packets whose tag did not verify (a wrong key, a tampered packet).
    rtcp_auth_failures: int = 0
    #: RTCP packets rejected by the replay window.
    rtcp_replay_failures: int = 0
    #: RTCP the peer sent in the clear (a well-formed RTCP packet without the SRTCP trailer),
    #: as baresip does at the start and end of a call: dropped, and no authentication failure.
    rtcp_unprotected: int = 0
    #: Packets libsrtp refused for any other reason (too short, malformed).
    other_failures: int = 0

    @property
    def auth_failures(self) -> int:
        """RTP and RTCP authentication failures together."""
        return self.rtp_auth_failures + self.rtcp_auth_failures

    @property
    def replay_failures(self) -> int:
        """RTP and RTCP replay failures together."""
        return self.rtp_replay_failures + self.rtcp_replay_failures


def is_plain_rtcp(data: bytes) -> bool:
    """Whether ``data`` is (compound) RTCP in the clear: each packet version 2 with an RTCP
    type, and lengths that add up to exactly the datagram (RFC 3550 6.1), which an SRTCP
    packet never does: its E flag, index and tag follow the last packet (RFC 3711 3.4)."""
    offset, end = 0, len(data)
    if end < 4:
        return False
    while offset < end:
        if end - offset < 4 or data[offset] >> 6 != 2 or data[offset + 1] not in _RTCP_TYPES:
            return False
        offset += 4 * (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1)
    return offset == end


def check_key_material(key: bytes, *, what: str = "SRTP key material") -> bytes:
    """Return ``key`` if it is 30 bytes of SDES key material; raise :class:`SrtpKeyError`."""
    if not isinstance(key, bytes | bytearray):
        raise SrtpKeyError(f"{what} must be bytes, not {type(key).__name__}")
    if len(key) != KEY_MATERIAL_LENGTH:
        raise SrtpKeyError(
            f"{what} must be {KEY_MATERIAL_LENGTH} bytes (16-byte key + 14-byte salt) "
            f"for {SUITE}, got {len(key)}"
        )
    return bytes(key)


def _session(key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    return pylibsrtp.Session(policy)


class _DirectSession:
    """The same libsrtp session, called without pylibsrtp's per-packet Python wrapper.

    ``pylibsrtp.Session.protect`` allocates an ``int *`` and checks types on every packet,
    which costs about as much as the AES and HMAC themselves (1.5 µs of ~3 µs here). This
    keeps one length cell and one buffer per session and calls the same libsrtp functions
    through pylibsrtp's own cffi binding. It relies on pylibsrtp internals (``_srtp``,
    ``_binding``), so :func:`_direct_available` checks it byte for byte against the public
    API at import and the public API is used if anything differs.
    """

    __slots__ = ("_buffer", "_ctx", "_length", "_session", "_view")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps the libsrtp context alive
        self._ctx = session._srtp[0]
        self._buffer = _ffi.new("char[]", 1500)
        self._view = _ffi.buffer(self._buffer)
        self._length = _ffi.new("int *")

    def _process(self, data: bytes, func: Any, room: int) -> bytes:
        n = len(data)
        if n > 1500 - room:
            raise ValueError("packet is too long")
        self._view[0:n] = data
        self._length[0] = n
        rc = func(self._ctx, self._buffer, self._length)
        if rc:
            raise pylibsrtp.Error(pylibsrtp.ERRORS[rc])
        return self._view[0 : self._length[0]]  # type: ignore[no-any-return]

    def protect(self, data: bytes) -> bytes:
        return self._process(data, _lib.srtp_protect, pylibsrtp.SRTP_MAX_TRAILER_LEN)

    def protect_rtcp(self, data: bytes) -> bytes:
        return self._process(data, _lib.srtp_protect_rtcp, pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN)

    def unprotect(self, data: bytes) -> bytes:
        return self._process(data, _lib.srtp_unprotect, 0)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return self._process(data, _lib.srtp_unprotect_rtcp, 0)


def _direct_rtp_functions(
    tx: _DirectSession, rx: _DirectSession, counters: SrtpCounters
) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes | None]]:
    """SRTP protect and unprotect as one function each: what :meth:`SrtpContext.protect_rtp`
    and :meth:`SrtpContext.unprotect_rtp` do through three Python calls (context, session,
    ``_process``), with everything they look up bound once."""
    protect_rtp, unprotect_rtp = _lib.srtp_protect, _lib.srtp_unprotect
    errors = pylibsrtp.ERRORS
    tx_ctx, tx_buffer, tx_view, tx_length = tx._ctx, tx._buffer, tx._view, tx._length
    rx_ctx, rx_buffer, rx_view, rx_length = rx._ctx, rx._buffer, rx._view, rx._length

    def protect(data: bytes) -> bytes:
        n = len(data)
        if n > MAX_RTP_LENGTH:
            raise SrtpPacketError(f"cannot protect RTP packet of {n} bytes: packet is too long")
        tx_view[0:n] = data
        tx_length[0] = n
        rc = protect_rtp(tx_ctx, tx_buffer, tx_length)
        if rc:
            raise SrtpPacketError(f"cannot protect RTP packet of {n} bytes: {errors[rc]}")
        return tx_view[0 : tx_length[0]]  # type: ignore[no-any-return]

    def unprotect(data: bytes) -> bytes | None:
        n = len(data)
        if n > 1500:
            counters.other_failures += 1
            return None
        rx_view[0:n] = data
        rx_length[0] = n
        rc = unprotect_rtp(rx_ctx, rx_buffer, rx_length)
        if rc:
            _count_rtp_failure(counters, errors[rc] if 0 <= rc < len(errors) else "")
            return None
        return rx_view[0 : rx_length[0]]  # type: ignore[no-any-return]

    return protect, unprotect


def _count_rtp_failure(counters: SrtpCounters, reason: str) -> None:
    if reason in _AUTH_FAILURES:
        counters.rtp_auth_failures += 1
    elif reason in _REPLAY_FAILURES:
        counters.rtp_replay_failures += 1
    else:
        counters.other_failures += 1


def _direct_available() -> bool:
    """Whether :class:`_DirectSession` gives exactly what pylibsrtp's public API gives."""
    if _lib is None:
        return False
    try:
        key = bytes(range(30))
        rtp = bytes.fromhex("80000001000000a0cafebabe") + bytes(range(160))
        rtcp = bytes.fromhex("80c90001cafebabe")
        public = _session(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        direct = _DirectSession(_session(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        if public.protect(rtp) != direct.protect(rtp):
            return False
        if public.protect_rtcp(rtcp) != direct.protect_rtcp(rtcp):
            return False
        receiver = _DirectSession(_session(key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        return receiver.unprotect(public.protect(rtp[:2] + b"\x00\x02" + rtp[4:])) == (
            rtp[:2] + b"\x00\x02" + rtp[4:]
        )
    except Exception:  # any surprise means: use the public API
        return False


try:
    from pylibsrtp._binding import ffi as _ffi
    from pylibsrtp._binding import lib as _lib
except ImportError:  # pragma: no cover - a pylibsrtp without the cffi module
    _ffi = _lib = None

#: Whether the direct libsrtp calls are in use (see :class:`_DirectSession`).
DIRECT_LIBSRTP = _direct_available()


def _fast(session: pylibsrtp.Session) -> pylibsrtp.Session | _DirectSession:
    return _DirectSession(session) if DIRECT_LIBSRTP else session


class SrtpContext:
    """SRTP/SRTCP for one call leg: protect what we send, verify what we receive.

    ``tx_key`` protects our packets (it is the key in *our* ``a=crypto`` line) and ``rx_key``
    verifies the peer's (the key in *its* line). A context keeps its rollover counters and
    replay windows for its whole life: a re-offer that keeps the keys must keep the context
    (see :meth:`keys_equal`), a new key needs a new context.
    """

    __slots__ = ("_rx", "_rx_key", "_tx", "_tx_key", "counters")

    def __init__(self, *, tx_key: bytes, rx_key: bytes) -> None:
        self._tx_key = check_key_material(tx_key, what="SRTP transmit key material")
        self._rx_key = check_key_material(rx_key, what="SRTP receive key material")
        self._tx = _fast(_session(self._tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._rx = _fast(_session(self._rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.counters = SrtpCounters()

    def __repr__(self) -> str:
        # Keys never reach a repr or a log line.
        return f"<SrtpContext {SUITE} keys=<redacted> {self.counters!r}>"

    def rekey(self, *, tx_key: bytes | None = None, rx_key: bytes | None = None) -> None:
        """Apply a re-offer: a direction whose key changed gets a new session (and rollover
        counter and replay window); a direction whose key is the same keeps its own."""
        if tx_key is not None and not hmac.compare_digest(self._tx_key, bytes(tx_key)):
            self._tx_key = check_key_material(tx_key, what="SRTP transmit key material")
            self._tx = _fast(_session(self._tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        if rx_key is not None and not hmac.compare_digest(self._rx_key, bytes(rx_key)):
            self._rx_key = check_key_material(rx_key, what="SRTP receive key material")
            self._rx = _fast(_session(self._rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def keys_equal(self, *, tx_key: bytes, rx_key: bytes) -> bool:
        """Whether these keys are the ones this context was made with (constant time)."""
        same_tx = hmac.compare_digest(self._tx_key, bytes(tx_key))
        same_rx = hmac.compare_digest(self._rx_key, bytes(rx_key))
        return same_tx and same_rx

    def rtp_functions(self) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes | None]]:
        """:meth:`protect_rtp` and :meth:`unprotect_rtp` for a per-packet loop, as two plain
        functions, valid until the next :meth:`rekey` (ask again after it)."""
        tx, rx = self._tx, self._rx
        if isinstance(tx, _DirectSession) and isinstance(rx, _DirectSession):
            return _direct_rtp_functions(tx, rx, self.counters)
        return self.protect_rtp, self.unprotect_rtp

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one RTP packet."""
        try:
            return self._tx.protect(packet)
        except (ValueError, TypeError, pylibsrtp.Error) as exc:
            raise SrtpPacketError(
                f"cannot protect RTP packet of {len(packet)} bytes: {exc}"
            ) from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one (compound) RTCP packet."""
        try:
            return self._tx.protect_rtcp(packet)
        except (ValueError, TypeError, pylibsrtp.Error) as exc:
            raise SrtpPacketError(
                f"cannot protect RTCP packet of {len(packet)} bytes: {exc}"
            ) from None

    def unprotect_rtp(self, data: bytes) -> bytes | None:
        """The RTP packet inside ``data``, or ``None`` if it failed (counted, dropped)."""
        try:
            return self._rx.unprotect(data)
        except pylibsrtp.Error as exc:
            _count_rtp_failure(self.counters, str(exc))
        except (ValueError, TypeError):
            self.counters.other_failures += 1
        return None

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        """The RTCP packet inside ``data``, or ``None`` if it failed (counted, dropped)."""
        try:
            return self._rx.unprotect_rtcp(data)
        except pylibsrtp.Error as exc:
            reason = str(exc)
            # libsrtp refuses plain RTCP for its length or its clear E flag ("unsupported
            # parameter", "unable to perform desired validation"), or, when the bytes where
            # the E flag would be happen to have it set, as an authentication failure.
            if is_plain_rtcp(data):
                self.counters.rtcp_unprotected += 1
            elif reason in _AUTH_FAILURES:
                self.counters.rtcp_auth_failures += 1
            elif reason in _REPLAY_FAILURES:
                self.counters.rtcp_replay_failures += 1
            else:
                self.counters.other_failures += 1
        except (ValueError, TypeError):
            self.counters.other_failures += 1
        return None
