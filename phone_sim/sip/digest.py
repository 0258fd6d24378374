"""SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760), sans-I/O.

The client side is :class:`DigestClient`: give it the 401/407 challenges of a response and
the request to retry, and it returns the ``Authorization``/``Proxy-Authorization`` header
fields to add, as an :class:`AuthAttempt`. Pass that attempt back with the next challenge of
the same request chain and the client tells a ``stale=true`` nonce refresh (answered once
more, not a failure) from a server that rejects the credentials (:class:`AuthenticationFailed`,
never a loop).

The server side is :class:`DigestServer`, used by the in-memory peers and test servers: it
issues nonces that carry their own timestamp (so an old one is answered with ``stale=true``)
and checks answers.

Passwords never appear in ``repr()`` or in log records.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import logging
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from phone_sim.errors import ProtocolError, RemoteError, UsageError
from phone_sim.sip.limits import SipParseError
from phone_sim.sip.uri import SipUri

logger = logging.getLogger(__name__)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "MAX_TRACKED_NONCES",
    "AuthAttempt",
    "AuthenticationFailed",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestError",
    "DigestResponse",
    "DigestServer",
    "DigestVerdict",
    "compute_response",
    "parse_challenges",
]

#: Hash functions by RFC 7616 algorithm name (upper case, without ``-sess``).
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}

#: Every algorithm this module can compute, in the canonical spelling of RFC 7616 §6.1.
ALGORITHMS: tuple[str, ...] = (
    "MD5",
    "MD5-sess",
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
)

#: What the D-Series firmware answers: plain MD5 (the D40 trace shows ``algorithm=md5``).
DEFAULT_ALGORITHMS: frozenset[str] = frozenset({"MD5"})

#: Limits that keep a hostile challenge from costing more than it should.
MAX_CHALLENGE_LENGTH = 4096
MAX_CHALLENGES = 16

_CANONICAL = {name.upper(): name for name in ALGORITHMS}


class DigestError(ProtocolError):
    """A challenge or an ``Authorization`` header field is malformed."""

    def __init__(self, message: str, *, status: int | None = 400) -> None:
        super().__init__(message, status=status)


class AuthenticationFailed(RemoteError):
    """The server refused our credentials, or asked for something we cannot answer."""

    exit_code = 1

    def __init__(self, message: str, *, realm: str | None = None) -> None:
        super().__init__(message)
        self.realm = realm


def canonical_algorithm(name: str | None) -> str:
    """Return the RFC 7616 spelling of *name* (absent means MD5); raise on unknown names."""
    if name is None:
        return "MD5"
    try:
        return _CANONICAL[name.upper()]
    except KeyError:
        raise DigestError(f"unknown digest algorithm {name!r}") from None


def _hash(algorithm: str, data: str) -> str:
    base = algorithm.removesuffix("-sess")
    return _HASHES[base](data.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Parsing of auth-params (RFC 3261 §25.1, RFC 7235 §2.1)

_WS_RE = re.compile(r"[ \t\r\n]*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
#: Hex digits of each algorithm's request-digest (RFC 7616 §3.4.1).
_DIGEST_LENGTH = {"MD5": 32, "SHA-256": 64, "SHA-512-256": 64}


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        match = _WS_RE.match(self.text, self.pos)
        assert match is not None  # the pattern matches the empty string
        self.pos = match.end()

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        self.skip_ws()
        match = _TOKEN_RE.match(self.text, self.pos)
        if match is None:
            where = self.text[self.pos : self.pos + 10]
            raise DigestError(f"expected a token at offset {self.pos} of challenge, got {where!r}")
        self.pos = match.end()
        return match.group()

    def value(self) -> str:
        if self.peek() != '"':
            return self.token()
        match = _QUOTED_RE.match(self.text, self.pos)
        if match is None:
            raise DigestError("unterminated quoted string in digest parameters")
        self.pos = match.end()
        inner = match.group(1)
        return _ESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner


# The common shape, one scheme and its parameters (``Digest a="b", c=d``), in two compiled
# patterns: one validates the whole value, the other walks its parameters. Tokens are
# matched greedily and can neither contain nor be followed by what ends them, so each
# pattern matches in one way only and the walk sees exactly the parameters the scanner
# below would. Anything else (several schemes, stray commas, errors) goes to the scanner,
# which names the problem; tests/sip/test_digest.py pins the two against each other.
_TCHARS = r"[A-Za-z0-9\-.!%*_+`'~]+"
# The quoted string is written as an unrolled loop: an alternation inside a repeat costs
# the regex engine a backtracking entry per character, three times the time.
_PARAM = rf'({_TCHARS})[ \t\r\n]*=[ \t\r\n]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|({_TCHARS}))'
_FAST_AUTH_RE = re.compile(
    rf"[ \t\r\n]*({_TCHARS})[ \t\r\n]+{_PARAM}(?:[ \t\r\n]*,[ \t\r\n]*{_PARAM})*[ \t\r\n]*",
    re.DOTALL,
)
_FAST_PARAM_RE = re.compile(rf"[ \t\r\n,]*{_PARAM}", re.DOTALL)


def _parse_auth_list(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split a WWW-Authenticate-style value into ``(scheme, params)`` pairs."""
    if len(text) > MAX_CHALLENGE_LENGTH:
        raise DigestError(f"challenge longer than {MAX_CHALLENGE_LENGTH} characters")
    whole = _FAST_AUTH_RE.fullmatch(text)
    if whole is None:
        return _parse_auth_list_general(text)
    params: dict[str, str] = {}
    for name, quoted, token in _FAST_PARAM_RE.findall(text, whole.end(1)):
        key = name.lower()
        if key in params:
            raise DigestError(f"duplicate digest parameter {key!r}")
        if token:
            params[key] = token
        else:
            params[key] = _ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
    return [(whole[1], params)]


def _parse_auth_list_general(text: str) -> list[tuple[str, dict[str, str]]]:
    """The scanner behind :func:`_parse_auth_list`: any shape, and precise errors."""
    if len(text) > MAX_CHALLENGE_LENGTH:
        raise DigestError(f"challenge longer than {MAX_CHALLENGE_LENGTH} characters")
    scanner = _Scanner(text)
    result: list[tuple[str, dict[str, str]]] = []
    while not scanner.at_end():
        if scanner.peek() == ",":
            scanner.pos += 1
            continue
        name = scanner.token()
        if scanner.peek() == "=":
            if not result:
                raise DigestError("digest parameters without an authentication scheme")
            scanner.pos += 1
            key = name.lower()
            params = result[-1][1]
            if key in params:
                raise DigestError(f"duplicate digest parameter {key!r}")
            params[key] = scanner.value()
            if not scanner.at_end() and scanner.peek() != ",":
                raise DigestError(f"expected ',' after digest parameter {key!r}")
        else:
            if len(result) >= MAX_CHALLENGES:
                raise DigestError(f"more than {MAX_CHALLENGES} challenges in one header field")
            result.append((name, {}))
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Challenges and credentials


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestChallenge:
    """One ``Digest`` challenge from a ``WWW-Authenticate`` or ``Proxy-Authenticate`` field."""

    realm: str
    """The protection space; credentials are chosen by it."""
    nonce: str
    """The server's nonce, echoed in the answer."""
    algorithm: str = "MD5"
    """RFC 7616 algorithm name in canonical spelling; absent on the wire means MD5."""
    qop: tuple[str, ...] = ()
    """Quality-of-protection options offered (``auth``, ``auth-int``); empty for RFC 2069."""
    opaque: str | None = None
    """Echoed verbatim in the answer when present."""
    stale: bool = False
    """True when the previous answer was right but its nonce had expired."""
    userhash: bool = False
    """RFC 7616 §3.4.4: the server wants the username hashed."""
    proxy: bool = False
    """True for ``Proxy-Authenticate`` (a 407); the answer goes in ``Proxy-Authorization``."""

    @classmethod
    def parse(cls, value: str, *, proxy: bool = False) -> list[DigestChallenge]:
        """Parse one header field value; non-Digest schemes (``Basic``...) are skipped."""
        challenges: list[DigestChallenge] = []
        for scheme, params in _parse_auth_list(value):
            if scheme.lower() != "digest":
                continue
            challenges.append(cls._from_params(params, proxy=proxy))
        return challenges

    @classmethod
    def _from_params(cls, params: Mapping[str, str], *, proxy: bool) -> DigestChallenge:
        if "realm" not in params:
            raise DigestError("digest challenge without realm")
        if not params.get("nonce"):
            raise DigestError("digest challenge without nonce")
        qop = tuple(
            option.strip().lower() for option in params.get("qop", "").split(",") if option.strip()
        )
        algorithm = params.get("algorithm")
        try:
            canonical = canonical_algorithm(algorithm)
        except DigestError:
            # An algorithm we do not know is not an error in the challenge: RFC 8760 lets the
            # server offer several and the client picks one it supports. Keep the name.
            canonical = algorithm or "MD5"
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=canonical,
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            userhash=params.get("userhash", "").lower() == "true",
            proxy=proxy,
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def parse_challenges(
    fields: Iterable[tuple[str, str]],
) -> list[DigestChallenge]:
    """Parse ``(header name, value)`` pairs of a 401/407 into challenges, in wire order.

    Only ``WWW-Authenticate`` and ``Proxy-Authenticate`` fields are looked at.
    """
    challenges: list[DigestChallenge] = []
    for name, value in fields:
        lname = name.lower()
        if lname == "www-authenticate":
            challenges.extend(DigestChallenge.parse(value, proxy=False))
        elif lname == "proxy-authenticate":
            challenges.extend(DigestChallenge.parse(value, proxy=True))
        if len(challenges) > MAX_CHALLENGES:
            raise DigestError(f"more than {MAX_CHALLENGES} challenges in one response")
    return challenges


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A user name and password for one realm (or for any realm when ``realm`` is None)."""

    username: str
    """The authentication name (the phone's ``authname``)."""
    password: str = field(repr=False)
    """The secret; never shown in ``repr()``."""
    realm: str | None = None
    """The realm these credentials are for; None answers any realm."""

    def __post_init__(self) -> None:
        if not self.username:
            raise UsageError("digest credentials need a user name")
        if any(c in self.username for c in "\r\n\0"):
            raise UsageError("digest user name contains a control character")


# --------------------------------------------------------------------------------------------
# The answer


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestResponse:
    """The parameters of an ``Authorization``/``Proxy-Authorization`` header field."""

    username: str
    """The user name as sent (already hashed when ``userhash`` is set)."""
    realm: str
    """The realm being answered."""
    nonce: str
    """The server nonce."""
    uri: str
    """The digest-uri: the Request-URI of the request."""
    response: str
    """The computed request-digest, in lower-case hex."""
    algorithm: str = "MD5"
    """The algorithm used."""
    cnonce: str | None = None
    """The client nonce (with qop)."""
    opaque: str | None = None
    """The server's opaque value, echoed."""
    qop: str | None = None
    """The chosen quality of protection."""
    nc: int | None = None
    """The nonce count (with qop)."""
    userhash: bool = False
    """RFC 7616: the username is hashed."""

    def __str__(self) -> str:
        # The parameter order is pjsip's (sip_auth_client.c), as the phone sends it.
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    @classmethod
    def parse(cls, value: str) -> DigestResponse:
        """Parse an ``Authorization`` header field value (server side)."""
        entries = _parse_auth_list(value)
        if len(entries) != 1 or entries[0][0].lower() != "digest":
            raise DigestError("Authorization is not a single Digest credential")
        params = entries[0][1]
        for required in ("username", "realm", "nonce", "uri", "response"):
            if required not in params:
                raise DigestError(f"digest credentials without {required}")
        for name, text in params.items():
            # The message parser keeps undecodable bytes as lone surrogates; they would
            # raise in the hashes (UnicodeEncodeError) long after the answer was accepted.
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise DigestError(f"digest parameter {name!r} is not UTF-8") from None
        nc: int | None = None
        if "nc" in params:
            text = params["nc"]
            if _NC_RE.fullmatch(text) is None:
                raise DigestError(f"digest nonce count {text!r} is not 8 hex digits")
            nc = int(text, 16)
        qop = params.get("qop")
        if qop is not None and (nc is None or "cnonce" not in params):
            raise DigestError("digest credentials with qop need nc and cnonce")
        algorithm = canonical_algorithm(params.get("algorithm"))
        response = params["response"]
        size = _DIGEST_LENGTH[algorithm.removesuffix("-sess")]
        if len(response) != size or _HEX_RE.fullmatch(response) is None:
            raise DigestError(f"digest response is not {size} hex digits")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=response.lower(),
            algorithm=algorithm,
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=qop.lower() if qop is not None else None,
            nc=nc,
            userhash=params.get("userhash", "").lower() == "true",
        )


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Compute the request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2; RFC 2069 without qop)."""
    algorithm = canonical_algorithm(algorithm)
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        if cnonce is None:
            raise UsageError(f"{algorithm} needs a cnonce")
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = _HASHES[algorithm.removesuffix("-sess")](body)
        ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise UsageError("qop needs nc and cnonce")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAttempt:
    """What :meth:`DigestClient.respond` added to a request; pass it back with the next one."""

    headers: tuple[tuple[str, str], ...]
    """``(name, value)`` header fields to add to the retried request."""
    realms: frozenset[tuple[bool, str]]
    """``(proxy, realm)`` protection spaces answered."""
    stale_realms: frozenset[tuple[bool, str]] = frozenset()
    """Those answered again because the server said ``stale=true``."""
    preemptive: bool = False
    """True when the answer reused a cached nonce before any challenge for this request."""


@dataclass(slots=True)
class _NonceState:
    challenge: DigestChallenge
    credentials: DigestCredentials
    nc: int = 0


@functools.cache
def _answered_algorithms(algorithms: tuple[str, ...]) -> frozenset[str]:
    # MD5 is always answered (every D-Series firmware does); the profile adds others. One
    # set per profile, shared by a fleet's digest clients.
    try:
        allowed = frozenset(canonical_algorithm(a) for a in algorithms)
    except DigestError as exc:
        raise UsageError(f"digest client: {exc}") from None
    return allowed | {"MD5"}


class DigestClient:
    """Answers digest challenges for one account, keeping nonce counts per realm.

    ``algorithms`` is what the phone profile allows on top of MD5, which is always answered.
    ``cnonce_factory`` makes client nonces (tests pass a deterministic one).
    """

    __slots__ = ("_algorithms", "_cnonce_factory", "_credentials", "_nonces")

    def __init__(
        self,
        credentials: DigestCredentials | Sequence[DigestCredentials],
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        if isinstance(credentials, DigestCredentials):
            credentials = [credentials]
        self._credentials: tuple[DigestCredentials, ...] = tuple(credentials)
        self._algorithms = _answered_algorithms(tuple(algorithms))
        self._cnonce_factory = cnonce_factory or (lambda: secrets.token_hex(16))
        self._nonces: dict[tuple[bool, str], _NonceState] = {}

    def __repr__(self) -> str:
        users = ", ".join(c.username for c in self._credentials)
        return f"<DigestClient users=[{users}] algorithms={sorted(self._algorithms)}>"

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithms this client answers."""
        return self._algorithms

    def _credentials_for(self, realm: str) -> DigestCredentials | None:
        fallback = None
        for creds in self._credentials:
            if creds.realm == realm:
                return creds
            if creds.realm is None and fallback is None:
                fallback = creds
        return fallback

    def respond(
        self,
        challenges: Sequence[DigestChallenge],
        *,
        method: str,
        uri: str,
        body: bytes = b"",
        previous: AuthAttempt | None = None,
    ) -> AuthAttempt:
        """Answer the challenges of a 401/407 to the request (*method*, *uri*, *body*).

        *previous* is the attempt the challenged request carried, if any. Raises
        :class:`AuthenticationFailed` when the server rejects credentials it was already
        given (no ``stale=true``), says ``stale`` twice in a row, or offers nothing we can
        answer.
        """
        if not challenges:
            raise AuthenticationFailed("the server asked for authentication but sent no Digest")
        # RFC 8760 §2.4: per protection space use the topmost challenge we support.
        chosen: dict[tuple[bool, str], DigestChallenge] = {}
        unsupported: dict[tuple[bool, str], str] = {}
        for challenge in challenges:
            space = (challenge.proxy, challenge.realm)
            if space in chosen:
                continue
            if challenge.algorithm not in self._algorithms:
                unsupported.setdefault(space, challenge.algorithm)
                continue
            if challenge.qop and not {"auth", "auth-int"} & set(challenge.qop):
                unsupported.setdefault(space, "qop=" + ",".join(challenge.qop))
                continue
            chosen[space] = challenge
        if not chosen:
            offered = ", ".join(f"{realm!r}: {alg}" for (_, realm), alg in unsupported.items())
            raise AuthenticationFailed(
                f"no digest challenge this phone can answer (offered {offered}; "
                f"allowed {', '.join(sorted(self._algorithms))})"
            )
        headers: list[tuple[str, str]] = []
        answered: set[tuple[bool, str]] = set()
        stale: set[tuple[bool, str]] = set()
        for space, challenge in chosen.items():
            creds = self._credentials_for(challenge.realm)
            if creds is None:
                continue
            if previous is not None and not previous.preemptive:
                tried = space in previous.realms or space in previous.stale_realms
                if tried and not challenge.stale:
                    # RFC 3261 22.1: a second challenge for credentials just sent means they
                    # are wrong; retrying the same ones would loop.
                    raise AuthenticationFailed(
                        f"the server rejected the credentials of {creds.username!r} "
                        f"for realm {challenge.realm!r}",
                        realm=challenge.realm,
                    )
                if tried and space in previous.stale_realms:
                    raise AuthenticationFailed(
                        f"the server answered stale=true twice in a row for realm "
                        f"{challenge.realm!r}",
                        realm=challenge.realm,
                    )
                if tried:
                    stale.add(space)
            self._nonces[space] = _NonceState(challenge=challenge, credentials=creds)
            headers.append(self._answer(space, method=method, uri=uri, body=body))
            answered.add(space)
        if not headers:
            realms = ", ".join(repr(realm) for _, realm in chosen)
            raise AuthenticationFailed(f"no credentials for realm {realms}")
        logger.debug(
            "answering digest for %s (stale: %s)",
            sorted(r for _, r in answered),
            sorted(r for _, r in stale),
        )
        return AuthAttempt(
            headers=tuple(headers),
            realms=frozenset(answered - stale),
            stale_realms=frozenset(stale),
        )

    def authorize(self, *, method: str, uri: str, body: bytes = b"") -> AuthAttempt | None:
        """Answer pre-emptively with the cached nonces (nc + 1), as pjsip does; None if none."""
        if not self._nonces:
            return None
        headers = [
            self._answer(space, method=method, uri=uri, body=body) for space in self._nonces
        ]
        return AuthAttempt(
            headers=tuple(headers), realms=frozenset(self._nonces), preemptive=True
        )

    def forget(self) -> None:
        """Drop the cached nonces (after a failure, or when the server changes)."""
        self._nonces.clear()

    def _answer(
        self, space: tuple[bool, str], *, method: str, uri: str, body: bytes
    ) -> tuple[str, str]:
        state = self._nonces[space]
        challenge = state.challenge
        creds = state.credentials
        qop: str | None = None
        if challenge.qop:
            qop = "auth" if "auth" in challenge.qop else "auth-int"
        nc: int | None = None
        cnonce: str | None = None
        if qop is not None or challenge.algorithm.endswith("-sess"):
            state.nc += 1
            nc = state.nc
            cnonce = self._cnonce_factory()
        response = compute_response(
            algorithm=challenge.algorithm,
            username=creds.username,
            realm=challenge.realm,
            password=creds.password,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        username = creds.username
        if challenge.userhash:
            username = _hash(challenge.algorithm, f"{creds.username}:{challenge.realm}")
        answer = DigestResponse(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            cnonce=cnonce,
            opaque=challenge.opaque,
            qop=qop,
            nc=nc if qop is not None else None,
            userhash=challenge.userhash,
        )
        name = "Proxy-Authorization" if challenge.proxy else "Authorization"
        return name, str(answer)


# --------------------------------------------------------------------------------------------
# Server


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestVerdict:
    """The outcome of checking an ``Authorization`` header field."""

    ok: bool
    """True when the credentials are right and the nonce is fresh."""
    stale: bool = False
    """True when the digest is right but its nonce cannot be used (expired, bound to another
    request, its count already used): re-challenge with ``stale=true``."""
    username: str | None = None
    """The authenticated user, when ``ok``."""
    reason: str = ""
    """Why the answer was refused."""
    malformed: bool = False
    """True when the answer cannot be used at all (unparseable, or its ``uri`` is not the
    Request-URI): RFC 7616 §3.4.6 answers 400 Bad Request."""


#: Nonce counts kept per nonce by default (:class:`DigestServer`'s replay table).
MAX_TRACKED_NONCES = 65_536


class DigestServer:
    """Issues digest challenges and checks answers (the lab's registrar and proxy, and the
    in-memory peers of tests).

    Nonces are ``base64(timestamp || serial || HMAC(secret, timestamp || serial || bind))``
    (32 bytes, 43 characters): they carry their own
    age (one older than ``nonce_lifetime`` seconds is answered with ``stale=true``) and can be
    bound to the request they were issued for (``bind``: the proxy binds its nonces to the
    Call-ID and From tag of the challenged request, as Kamailio's ``auth_checks_*`` do).

    With ``qop=auth`` the server keeps the highest nonce count (``nc``) seen per nonce and
    refuses a repeated or lower one (RFC 7616 §3.4.5): a captured answer cannot be replayed.
    The table holds at most ``max_nonces`` nonces and forgets each one when it expires; when
    it is full the nonce issued first is dropped and every nonce issued before it is then
    answered with ``stale=true`` (a new challenge, never a second use).
    """

    __slots__ = (
        "_counts", "_floor", "_issued", "_secret", "_serial", "algorithm", "max_nonces",
        "nonce_lifetime", "qop", "realm",
    )  # fmt: skip

    def __init__(
        self,
        realm: str,
        *,
        algorithm: str = "MD5",
        qop: tuple[str, ...] = ("auth",),
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
        max_nonces: int = MAX_TRACKED_NONCES,
    ) -> None:
        if max_nonces < 1:
            raise UsageError("max_nonces must be at least 1")
        self.realm = realm
        self.algorithm = canonical_algorithm(algorithm)
        self.qop = qop
        self.nonce_lifetime = nonce_lifetime
        self.max_nonces = max_nonces
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        # nonce -> the highest nc accepted; a heap of (issued, nonce) to expire and evict.
        self._counts: dict[str, int] = {}
        self._issued: list[tuple[float, str]] = []
        # Nonces issued at or before this time and not in the table were evicted (or never
        # counted): they get stale=true.
        self._floor = float("-inf")
        self._serial = 0

    def __repr__(self) -> str:
        return f"<DigestServer realm={self.realm!r} algorithm={self.algorithm}>"

    @property
    def tracked_nonces(self) -> int:
        """How many nonces the replay table holds."""
        return len(self._counts)

    def _mac(self, stamp: bytes, bind: str) -> bytes:
        # hmac.digest() is the one-shot C path: a third of hmac.new() per registration.
        data = stamp + bind.encode("utf-8", "surrogatepass") if bind else stamp
        return hmac.digest(self._secret, data, "sha256")[:16]

    def _nonce(self, now: float, bind: str = "") -> str:
        # A serial number makes every nonce unique, even two issued at the same instant:
        # nonce counts are tracked per nonce, so two clients must never share one.
        self._serial += 1
        stamp = struct.pack("!dQ", now, self._serial)
        return base64.urlsafe_b64encode(stamp + self._mac(stamp, bind)).decode("ascii").rstrip("=")

    def _nonce_time(self, nonce: str, bind: str = "") -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        stamp, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(stamp, bind)):
            return None
        return float(struct.unpack("!d", stamp[:8])[0])

    def challenge(self, now: float, *, stale: bool = False, bind: str = "") -> DigestChallenge:
        """A fresh challenge; render it with ``str()`` into ``WWW-Authenticate``. ``bind``
        ties its nonce to one request (what :meth:`verify` must then be given)."""
        return DigestChallenge(
            realm=self.realm,
            nonce=self._nonce(now, bind),
            algorithm=self.algorithm,
            qop=self.qop,
            opaque=None,
            stale=stale,
        )

    def verify(
        self,
        authorization: str,
        *,
        method: str,
        body: bytes = b"",
        passwords: Mapping[str, str],
        now: float,
        request_uri: str | SipUri | None = None,
        bind: str = "",
    ) -> DigestVerdict:
        """Check an ``Authorization`` value against *passwords* (user name -> password).

        ``request_uri`` is the Request-URI the answer's ``uri`` must name (RFC 3261 §22.4,
        RFC 7616 §3.4.6); ``None`` skips that check (in-memory test peers only). ``bind`` is
        what the nonce was bound to in :meth:`challenge`. A successful answer records its
        nonce count: the same answer twice is a replay.
        """
        try:
            answer = DigestResponse.parse(authorization)
        except DigestError as exc:
            return DigestVerdict(ok=False, reason=str(exc), malformed=True)
        if answer.realm != self.realm:
            return DigestVerdict(ok=False, reason=f"wrong realm {answer.realm[:60]!r}")
        if answer.algorithm != self.algorithm:
            return DigestVerdict(ok=False, reason=f"algorithm {answer.algorithm} not offered")
        if self.qop and answer.qop not in self.qop:
            return DigestVerdict(ok=False, reason="qop missing or not offered")
        if request_uri is not None and not _same_uri(answer.uri, request_uri):
            return DigestVerdict(
                ok=False, malformed=True, reason="digest uri does not match the Request-URI"
            )
        password = passwords.get(answer.username)
        # An unknown user costs the same hashes as a known one: no timing tells them apart.
        expected = compute_response(
            algorithm=answer.algorithm,
            username=answer.username,
            realm=answer.realm,
            password=password if password is not None else _NO_PASSWORD,
            nonce=answer.nonce,
            method=method,
            uri=answer.uri,
            qop=answer.qop,
            nc=answer.nc,
            cnonce=answer.cnonce,
            body=body,
        )
        # Bytes: compare_digest raises on non-ASCII str (parse() already checked for hex).
        right = hmac.compare_digest(expected.encode("ascii"), answer.response.encode("ascii"))
        issued = self._nonce_time(answer.nonce, bind)
        if password is None:
            return DigestVerdict(ok=False, reason="unknown user")
        if not right:
            return DigestVerdict(ok=False, reason="wrong response digest")
        # The digest is right: whatever is wrong with the nonce, the client knows the
        # password, so it gets stale=true and answers the fresh nonce (RFC 7616 §3.3).
        if issued is None:
            reason = "nonce not issued by this server" + (" for this request" if bind else "")
            return DigestVerdict(ok=False, stale=True, reason=reason)
        if now - issued > self.nonce_lifetime:
            return DigestVerdict(ok=False, stale=True, reason="nonce expired")
        if answer.nc is not None:
            refused = self._count(answer.nonce, answer.nc, issued, now)
            if refused is not None:
                return DigestVerdict(ok=False, stale=True, reason=refused)
        return DigestVerdict(ok=True, username=answer.username)

    def _count(self, nonce: str, nc: int, issued: float, now: float) -> str | None:
        """Record ``nc`` for ``nonce``; the reason it is refused, or None."""
        counts = self._counts
        heap = self._issued
        # Forget nonces that have expired: they are answered stale before reaching here.
        horizon = now - self.nonce_lifetime
        while heap and heap[0][0] < horizon:
            _, old = heapq.heappop(heap)
            counts.pop(old, None)
        last = counts.get(nonce)
        if last is None:
            if issued <= self._floor:
                return "nonce no longer tracked (replay table full)"
            while len(counts) >= self.max_nonces:
                first, evicted = heapq.heappop(heap)
                counts.pop(evicted, None)
                self._floor = max(self._floor, first)
            if issued <= self._floor:
                return "nonce no longer tracked (replay table full)"
            heapq.heappush(heap, (issued, nonce))
        elif nc <= last:
            return f"nonce count {nc} already used (last {last}): a replay"
        counts[nonce] = nc
        return None


#: Stands in for the password of an unknown user, so that the hashes still run.
_NO_PASSWORD = "\0phone-sim: no such user\0"  # noqa: S105 - not a secret


def _same_uri(digest_uri: str, request_uri: str | SipUri) -> bool:
    """RFC 3261 §22.4: the digest-uri names the Request-URI (19.1.4 equality)."""
    if isinstance(request_uri, str):
        if digest_uri == request_uri:
            return True
        try:
            request_uri = SipUri.parse(request_uri)
        except SipParseError:
            return False
    elif digest_uri == str(request_uri):
        return True
    try:
        return SipUri.parse(digest_uri).equivalent(request_uri)
    except SipParseError:
        return False
