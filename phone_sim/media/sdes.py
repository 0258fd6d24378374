"""SDES (RFC 4568): the ``a=crypto`` attribute, SRTP master keys and their redaction.

:class:`CryptoAttribute` parses and serializes one ``a=crypto`` value; :func:`check_crypto`
says whether the phone can use it (the D-Series firmware takes only
``AES_CM_128_HMAC_SHA1_80``, PROTOCOL-NOTES §5; pylibsrtp has no MKI, §7). Keys come from
:mod:`secrets` and never reach ``repr()``, ``str()`` or logs: :func:`redact` replaces every
``inline:`` value in a text meant for a log.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

from phone_sim.errors import ProtocolError

AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
"""The only crypto suite the D-Series phone supports."""

SUPPORTED_SUITES: tuple[str, ...] = (AES_CM_128_HMAC_SHA1_80,)
"""Suites phone-sim accepts, in preference order."""

MASTER_KEY_LENGTH = 16
"""AES-128 master key bytes."""
MASTER_SALT_LENGTH = 14
"""SRTP master salt bytes (RFC 3711 8.2)."""
KEY_SALT_LENGTH = MASTER_KEY_LENGTH + MASTER_SALT_LENGTH
"""Bytes in one ``inline:`` value for ``AES_CM_128_HMAC_SHA1_80``: key then salt, 30."""

# RFC 4568 6.2.1: the suite's master key lives at most 2^48 SRTP (and 2^31 SRTCP) packets.
MAX_KEY_LIFETIME = 2**48
"""The largest ``|lifetime`` the suite allows; a larger one is invalid."""

# RFC 4568 6.3: session parameters that only relax protection. The firmware never uses
# them, and phone-sim is never weaker than the firmware.
_WEAKENING_PARAMS = ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP")

_TAG_RE = re.compile(r"[1-9][0-9]{0,8}|0")
_SUITE_RE = re.compile(r"[A-Za-z0-9_]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# The exponent is at most two digits so that 2^N stays cheap to compute.
_LIFETIME_RE = re.compile(r"(2\^)([0-9]{1,2})|()([0-9]{1,20})")
_MKI_RE = re.compile(r"([0-9]{1,20}):([0-9]{1,3})")
# ASCII digits only: str.isdigit() also takes "²" (then int() raises) and "٦٤" (int() = 64).
_NUMBER_RE = re.compile(r"[0-9]{1,20}")
_INLINE_RE = re.compile(r"(inline:)[^|;\s\"]*", re.IGNORECASE)
_KEY_LINE_RE = re.compile(r"^(k=)[^\r\n]*", re.MULTILINE)

REDACTED = "<redacted>"
"""What :func:`redact` writes in place of a key."""


class SdesParseError(ProtocolError):
    """A malformed ``a=crypto`` value. Carries 488 and the tag, when it could be read."""

    def __init__(self, message: str, *, tag: int | None = None) -> None:
        super().__init__(message, status=488)
        self.tag = tag


def generate_key() -> bytes:
    """A fresh master key and salt for ``AES_CM_128_HMAC_SHA1_80``: 30 bytes from ``secrets``."""
    return secrets.token_bytes(KEY_SALT_LENGTH)


def redact(text: str) -> str:
    """``text`` with every ``inline:`` key and every SDP ``k=`` value replaced, for logs."""
    return _KEY_LINE_RE.sub(rf"\g<1>{REDACTED}", _INLINE_RE.sub(rf"\g<1>{REDACTED}", text))


def redact_bytes(data: bytes) -> str:
    """:func:`redact` for a raw body: decoded leniently, since it only goes to a log."""
    return redact(data.decode("utf-8", errors="replace"))


@dataclass(frozen=True, kw_only=True)
class SdesKeyParam:
    """One ``inline:<key||salt>[|lifetime][|MKI:length]`` key parameter (RFC 4568 9.2)."""

    key_salt: bytes = field(repr=False)
    """The master key followed by the master salt, decoded from base64. Never shown."""
    lifetime: str | None = None
    """The lifetime as written (``2^31`` or ``2147483648``), or ``None``."""
    mki: str | None = None
    """The ``MKI:length`` as written, or ``None``."""

    @property
    def lifetime_packets(self) -> int | None:
        """The lifetime as a packet count, or ``None`` when none was given."""
        if self.lifetime is None:
            return None
        match = _LIFETIME_RE.fullmatch(self.lifetime)
        if match is None:  # only reachable for a hand-built instance
            raise ValueError("lifetime is not N or 2^N")
        if match.group(1):
            return int(2 ** int(match.group(2)))
        return int(match.group(4))

    @property
    def mki_value(self) -> int | None:
        """The MKI value, or ``None``."""
        return None if self.mki is None else int(self.mki.split(":")[0])

    @property
    def mki_length(self) -> int | None:
        """The MKI length in bytes, or ``None``."""
        return None if self.mki is None else int(self.mki.split(":")[1])

    @classmethod
    def parse(cls, text: str, *, tag: int | None = None) -> SdesKeyParam:
        """Parse one key parameter; :class:`SdesParseError` says what is wrong with it."""
        method, colon, info = text.partition(":")
        if not colon:
            raise SdesParseError("key parameter has no key method (expected inline:)", tag=tag)
        if method.lower() != "inline":
            raise SdesParseError(
                f"key method {method[:20]!r} is not supported (only inline)", tag=tag
            )
        parts = info.split("|")
        if len(parts) > 3:
            raise SdesParseError("inline key has more than a lifetime and an MKI", tag=tag)
        encoded, extras = parts[0], parts[1:]
        if not encoded:
            raise SdesParseError("inline key is empty", tag=tag)
        if _BASE64_RE.fullmatch(encoded) is None:
            raise SdesParseError("inline key is not valid base64", tag=tag)
        try:
            # Some peers drop the padding; RFC 4568 9.2 uses RFC 3548 base64, which has it.
            key_salt = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise SdesParseError("inline key is not valid base64", tag=tag) from None
        lifetime: str | None = None
        mki: str | None = None
        for i, extra in enumerate(extras):
            if ":" in extra:
                if mki is not None or _MKI_RE.fullmatch(extra) is None:
                    raise SdesParseError("MKI is not VALUE:LENGTH", tag=tag)
                if not 1 <= int(extra.split(":")[1]) <= 128:
                    raise SdesParseError("MKI length is not in 1..128", tag=tag)
                mki = extra
            else:
                if i != 0 or _LIFETIME_RE.fullmatch(extra) is None:
                    raise SdesParseError("key lifetime is not N or 2^N", tag=tag)
                lifetime = extra
        return cls(key_salt=key_salt, lifetime=lifetime, mki=mki)

    def serialize(self) -> str:
        """The wire form, key included. Only for SDP bodies, never for logs."""
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            text += "|" + self.lifetime
        if self.mki is not None:
            text += "|" + self.mki
        return text

    def __str__(self) -> str:
        return redact(self.serialize())


@dataclass(frozen=True, kw_only=True)
class CryptoAttribute:
    """One ``a=crypto:<tag> <suite> <key-params> [<session-params>]`` (RFC 4568 9.1)."""

    tag: int
    """The tag the answer echoes (1..999999999)."""
    suite: str
    """The crypto suite name, as written."""
    key_params: tuple[SdesKeyParam, ...]
    """The key parameters, in order (``;``-separated on the wire)."""
    session_params: tuple[str, ...] = ()
    """Session parameters as written (``KDR=0``, ``WSH=64``...)."""

    @classmethod
    def for_key(cls, key_salt: bytes, *, tag: int = 1) -> CryptoAttribute:
        """The attribute the phone sends: ``<tag> AES_CM_128_HMAC_SHA1_80 inline:<key>``."""
        if len(key_salt) != KEY_SALT_LENGTH:
            raise ValueError(f"an SRTP master key and salt is {KEY_SALT_LENGTH} bytes")
        return cls(
            tag=tag, suite=AES_CM_128_HMAC_SHA1_80, key_params=(SdesKeyParam(key_salt=key_salt),)
        )

    @property
    def key_salt(self) -> bytes:
        """The first key parameter's master key and salt."""
        return self.key_params[0].key_salt

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto`` line (everything after ``crypto:``)."""
        fields = value.split()
        tag: int | None = None
        if fields and _TAG_RE.fullmatch(fields[0]):
            tag = int(fields[0])
        if len(fields) < 3:
            raise SdesParseError(
                "crypto attribute needs a tag, a suite and key parameters", tag=tag
            )
        if tag is None:
            # pjsip (the firmware's stack) also refuses leading zeros in the tag.
            raise SdesParseError(
                "crypto tag is not a decimal number of 1 to 9 digits without leading zeros"
            )
        if _SUITE_RE.fullmatch(fields[1]) is None:
            raise SdesParseError("crypto suite is not a token", tag=tag)
        key_params = tuple(SdesKeyParam.parse(p, tag=tag) for p in fields[2].split(";"))
        return cls(
            tag=tag, suite=fields[1], key_params=key_params, session_params=tuple(fields[3:])
        )

    def serialize(self) -> str:
        """The attribute value with the key. Only for SDP bodies, never for logs."""
        keys = ";".join(p.serialize() for p in self.key_params)
        return " ".join((str(self.tag), self.suite, keys, *self.session_params))

    def __str__(self) -> str:
        return redact(self.serialize())


def check_crypto(attribute: CryptoAttribute) -> str | None:
    """Why the phone cannot use ``attribute``, or ``None`` when it can.

    The reason is one short sentence, suitable for a SIP ``Warning`` header.
    """
    if attribute.suite not in SUPPORTED_SUITES:
        return (
            f"crypto suite {attribute.suite[:40]} is not supported (only {AES_CM_128_HMAC_SHA1_80})"
        )
    if len(attribute.key_params) != 1:
        return f"{len(attribute.key_params)} master keys offered; phone-sim takes one, without MKI"
    param = attribute.key_params[0]
    if len(param.key_salt) != KEY_SALT_LENGTH:
        return (
            f"inline key is {len(param.key_salt)} bytes; {attribute.suite} needs "
            f"{KEY_SALT_LENGTH} (16 key + 14 salt)"
        )
    if param.mki is not None:
        return "an MKI is required, and phone-sim's SRTP (pylibsrtp) has no MKI"
    lifetime = param.lifetime_packets
    if lifetime is not None and not 1 <= lifetime <= MAX_KEY_LIFETIME:
        return f"key lifetime {param.lifetime} is outside 1..2^48 (RFC 4568 6.2.1)"
    for session_param in attribute.session_params:
        reason = _check_session_param(session_param)
        if reason is not None:
            return reason
    return None


def _check_session_param(param: str) -> str | None:
    name, _, value = param.partition("=")
    if name.startswith("-"):
        return None  # RFC 4568 6.3.7: a "-" parameter is optional and may be ignored
    if name in _WEAKENING_PARAMS:
        return f"session parameter {name} would weaken SRTP; the phone never does that"
    number = int(value) if _NUMBER_RE.fullmatch(value) else None
    if name == "KDR":
        # RFC 4568 6.3.1: KDR=0 means the key is derived once, which is all pylibsrtp does.
        if number == 0:
            return None
        return (
            f"session parameter KDR={_shown(value, 10)} is not supported "
            "(key derivation rate 0 only)"
        )
    if name == "WSH":
        if number is not None and number >= 64:
            return None  # RFC 4568 6.3.6: a hint; the replay window stays the media layer's
        return f"session parameter WSH={_shown(value, 10)} is invalid (at least 64)"
    if name == "FEC_ORDER" and value == "FEC_SRTP":
        return None  # RFC 4568 6.3.4: the default order
    if name in ("FEC_ORDER", "FEC_KEY"):
        return f"session parameter {name} is not supported (no FEC)"
    return f"unknown mandatory session parameter {_shown(name, 30)}"


def _shown(text: str, limit: int) -> str:
    """``text`` as a Warning header's quoted string may carry it: printable ASCII, no quote."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?"
                   for c in text[:limit])
