"""The D-Series phone's wire signature (PROTOCOL-NOTES §5): how its requests look.

The firmware's SIP stack is pjsip, and a server (Asterisk's ``res_pjsip``, DPMA) sees:

- ``User-Agent: Digium <Model> <firmware>`` (Asterisk adds Digium presence data only when the
  User-Agent contains "digium");
- a Via with ``rport`` before a ``z9hG4bKPj...`` branch;
- a Contact URI carrying ``;ob`` (RFC 5626 outbound, as pjsip sets it by default);
- the D40's Allow list, which we trim to the methods the stack really handles;
- ``Supported`` with only what is implemented (no ``100rel`` or ``timer`` yet).

:class:`PhoneSignature` holds those choices; :meth:`PhoneSignature.build_request` assembles
an out-of-dialog request in pjsip's header order; :func:`stamp_via` adds the top Via when the
user agent core sends it. Identifiers come from an injected :class:`random.Random`, so a test
with a seeded one is reproducible.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from phone_sim.errors import UsageError
from phone_sim.sip.headers import CSeq, Headers, HeaderValue, NameAddr, Via
from phone_sim.sip.message import SipRequest
from phone_sim.sip.transaction import MAGIC_COOKIE
from phone_sim.sip.uri import SipUri

__all__ = [
    "D40_ALLOW",
    "DEFAULT_FIRMWARE",
    "DEFAULT_MODEL",
    "IMPLEMENTED_METHODS",
    "IMPLEMENTED_OPTION_TAGS",
    "PJSIP_BRANCH_PREFIX",
    "PhoneSignature",
    "new_branch",
    "new_call_id",
    "new_tag",
    "stamp_via",
]

#: The Allow list of a D40's INVITE (PROTOCOL-NOTES §5), in the phone's order.
D40_ALLOW: tuple[str, ...] = (
    "PRACK",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "OPTIONS",
)

#: The methods this stack handles today: transactions and dialogs for INVITE/ACK/BYE/CANCEL,
#: OPTIONS answered by the user agent core. PRACK needs 100rel, UPDATE RFC 3311, SUBSCRIBE and
#: REFER event packages: none is implemented, so none is advertised. The phone layer adds
#: MESSAGE and NOTIFY when it handles DPMA provisioning and check-sync.
IMPLEMENTED_METHODS: frozenset[str] = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"})

#: Option tags this stack implements. The firmware sends ``replaces, 100rel, timer,
#: norefersub``; later issues add each when it is built.
IMPLEMENTED_OPTION_TAGS: frozenset[str] = frozenset()

#: pjsip prefixes its RFC 3261 branches with ``Pj`` after the magic cookie.
PJSIP_BRANCH_PREFIX = MAGIC_COOKIE + "Pj"

DEFAULT_MODEL = "D40"
DEFAULT_FIRMWARE = "1_4_0_0_57389"

# [?] The firmware's exact generator is not public (docs/sip-transactions.md). pjsip built
# without libuuid, as on an embedded phone, makes 32-character unique strings of letters,
# digits, '.' and '-'; 24 random octets in base64 with those two extra characters give exactly
# that (192 bits), at C speed.
_UNIQUE_OCTETS = 24


def _unique(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(_UNIQUE_OCTETS), altchars=b".-").decode("ascii")


def new_branch(rng: random.Random) -> str:
    """A pjsip-style RFC 3261 branch: ``z9hG4bKPj`` + 32 random characters."""
    return PJSIP_BRANCH_PREFIX + _unique(rng)


def new_tag(rng: random.Random) -> str:
    """A From/To tag as pjsip makes them (32 random characters)."""
    return _unique(rng)


def new_call_id(rng: random.Random) -> str:
    """A Call-ID as pjsip makes them (32 random characters, no host part)."""
    return _unique(rng)


class _ProfileLike(Protocol):
    """What :meth:`PhoneSignature.for_profile` reads from a ``firmware.FirmwareProfile``."""

    @property
    def user_agent(self) -> str: ...

    @property
    def digest_algorithms(self) -> tuple[str, ...]: ...


def _check_token_list(values: Iterable[str], what: str) -> tuple[str, ...]:
    out = tuple(values)
    for value in out:
        if not value or any(c in value for c in " ,\t\r\n"):
            raise UsageError(f"bad {what} entry {value!r}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneSignature:
    """How the emulated phone identifies itself and what it advertises."""

    user_agent: str = f"Digium {DEFAULT_MODEL} {DEFAULT_FIRMWARE}"
    """The User-Agent header: ``Digium <Model> <firmware>``."""
    allow: tuple[str, ...] = tuple(m for m in D40_ALLOW if m in IMPLEMENTED_METHODS)
    """Methods advertised in Allow (and accepted), in the D40's order."""
    supported: tuple[str, ...] = ()
    """Option tags advertised in Supported; empty means no Supported header."""
    digest_algorithms: tuple[str, ...] = ("MD5",)
    """Digest algorithms the phone answers (the profile decides; MD5 on the D40)."""
    max_forwards: int = 70
    """The Max-Forwards of new requests (pjsip's default)."""
    outbound: bool = True
    """Put ``;ob`` on the Contact URI (pjsip's RFC 5626 default)."""
    accept: tuple[str, ...] = field(default=("application/sdp",))
    """Body types advertised in Accept (OPTIONS answers)."""

    def __post_init__(self) -> None:
        if not self.user_agent or any(c in self.user_agent for c in "\r\n"):
            raise UsageError("bad User-Agent")
        _check_token_list(self.allow, "Allow")
        _check_token_list(self.supported, "Supported")

    @classmethod
    def for_phone(
        cls,
        model: str = DEFAULT_MODEL,
        firmware: str = DEFAULT_FIRMWARE,
        *,
        extra_methods: Iterable[str] = (),
        supported: Sequence[str] = (),
    ) -> PhoneSignature:
        """The signature of *model* on *firmware*, advertising the implemented methods plus
        *extra_methods* (those the caller handles itself, such as MESSAGE or NOTIFY)."""
        if not model.isalnum() or not firmware or " " in firmware:
            raise UsageError(f"bad model/firmware {model!r} {firmware!r}")
        return cls(
            user_agent=f"Digium {model} {firmware}",
            allow=trimmed_allow(IMPLEMENTED_METHODS | set(extra_methods)),
            supported=tuple(supported),
        )

    @classmethod
    def for_profile(
        cls, profile: _ProfileLike, *, extra_methods: Iterable[str] = ()
    ) -> PhoneSignature:
        """The signature of a ``phone_sim.firmware.FirmwareProfile``."""
        return cls(
            user_agent=profile.user_agent,
            allow=trimmed_allow(IMPLEMENTED_METHODS | set(extra_methods)),
            digest_algorithms=tuple(profile.digest_algorithms),
        )

    @property
    def allow_header(self) -> str:
        """The Allow value, comma separated as pjsip writes it."""
        return ", ".join(self.allow)

    def contact(
        self, user: str | None, host: str, port: int | None, transport: str
    ) -> NameAddr:
        """The phone's Contact: ``<sip:user@host:port;transport=TLS;ob>``."""
        params: list[tuple[str, str | None]] = []
        if transport.upper() != "UDP":
            # pjsip writes the transport in upper case (Asterisk's Contact shows
            # ";transport=TLS" on a D-Series registration).
            params.append(("transport", transport.upper()))
        if self.outbound:
            params.append(("ob", None))
        return NameAddr(SipUri("sip", user, None, host, port, tuple(params)))

    def build_request(
        self,
        method: str,
        uri: SipUri,
        *,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int,
        contact: NameAddr | None = None,
        routes: Sequence[NameAddr] = (),
        headers: Iterable[tuple[str, HeaderValue]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """A request in pjsip's header order, without Via (the user agent core adds it).

        A REGISTER is built by pjsip's registration client: Route, Max-Forwards, From, To,
        Call-ID, CSeq, User-Agent, Contact, the extra *headers* (Expires...), Allow,
        Supported. Every other request goes through ``pjsip_endpt_create_request`` (and the
        INVITE session and the session-timer module add theirs after), as the D40's INVITE
        shows it: Route, Max-Forwards, From, To, Contact, Call-ID, CSeq, Allow, Supported,
        the extra *headers* (Session-Expires, Min-SE...), User-Agent. Content-Type is last.
        """
        if not 0 <= cseq < 2**31:
            raise UsageError(f"CSeq {cseq} out of range (RFC 3261 8.1.1.5)")
        h = Headers()
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", self.max_forwards)
        h.add("From", from_)
        h.add("To", to)
        registering = method == "REGISTER"
        if not registering and contact is not None:
            h.add("Contact", contact)
        h.add("Call-ID", call_id)
        h.add("CSeq", CSeq(cseq, method))
        if registering:
            h.add("User-Agent", self.user_agent)
            if contact is not None:
                h.add("Contact", contact)
            for name, value in headers:
                h.add(name, value)
        if method not in ("ACK", "CANCEL"):
            h.add("Allow", self.allow_header)
            if self.supported:
                h.add("Supported", ", ".join(self.supported))
        if not registering:
            for name, value in headers:
                h.add(name, value)
            h.add("User-Agent", self.user_agent)
        if body:
            if content_type is None:
                raise UsageError("a request body needs a Content-Type")
            h.add("Content-Type", content_type)
        return SipRequest(method, uri, h, body)


def trimmed_allow(handled: Iterable[str]) -> tuple[str, ...]:
    """The D40's Allow list, in its order, keeping only the *handled* methods; methods the
    D40 does not list come after, sorted."""
    handled_set = {m.upper() for m in handled}
    ordered = [m for m in D40_ALLOW if m in handled_set]
    ordered += sorted(handled_set - set(D40_ALLOW))
    return tuple(ordered)


def stamp_via(
    request: SipRequest, *, transport: str, host: str, port: int | None, branch: str
) -> Via:
    """Put the phone's top Via on *request* (``SIP/2.0/<T> host:port;rport;branch=...``).

    pjsip writes ``rport`` before ``branch`` (RFC 3581 asks for a response to the source port).
    Returns the Via.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # RFC 3261 25.1: an IPv6 sent-by is an IPv6reference
    via = Via(transport.upper(), host, port, (("rport", None), ("branch", branch)))
    request.headers.insert(0, "Via", via)
    return via
