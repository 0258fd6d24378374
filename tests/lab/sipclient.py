"""A TEST-ONLY minimal SIP client that builds REGISTERs and answers digest challenges.

Independent of the phone side (part A of issue #4) so the registrar's tests do not depend on
it: it writes the bytes a pjsip phone would send and computes the digest with the RFC 2617
formula from :mod:`phone_sim.sip.digest`.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

from phone_sim.sip.digest import DigestChallenge, DigestResponse, compute_response
from phone_sim.sip.message import SipResponse, parse_message

_branches = itertools.count(1)


@dataclass
class RegisterClient:
    """One phone's registration dialog state: Call-ID, CSeq, its Contact."""

    user: str
    password: str = field(repr=False)
    domain: str = "lab.phone-sim.test"
    transport: str = "TLS"
    local: tuple[str, int] = ("127.0.0.1", 5099)
    authname: str | None = None
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    cseq: int = 0
    contact_params: str = ";ob"
    contact_user: str | None = None
    user_agent: str = "Digium D40 1_4_0_0_57389"
    challenge: DigestChallenge | None = None
    nc: int = 0
    rport: bool = True

    def contact(self, port: int | None = None) -> str:
        host, lport = self.local
        return (
            f"<sip:{self.contact_user or self.user}@{host}:{port or lport};"
            f"transport={self.transport.lower()}{self.contact_params}>"
        )

    def register(
        self,
        *,
        expires: int | None = 300,
        contacts: list[str] | None = None,
        extra: list[str] | None = None,
        authorize: bool = True,
        password: str | None = None,
        branch: str | None = None,
    ) -> bytes:
        """The next REGISTER (CSeq + 1), with credentials when a challenge is known."""
        self.cseq += 1
        host, port = self.local
        branch = branch or f"z9hG4bKPj{next(_branches)}x{secrets.token_hex(4)}"
        ruri = f"sip:{self.domain}"
        lines = [
            f"REGISTER {ruri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {host}:{port}{';rport' if self.rport else ''}"
            f";branch={branch}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag=ft{self.call_id[:6]}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"User-Agent: {self.user_agent}",
        ]
        for contact in contacts if contacts is not None else [self.contact()]:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorize and self.challenge is not None:
            lines.append(f"Authorization: {self.authorization('REGISTER', ruri, password)}")
        lines.extend(extra or [])
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def authorization(self, method: str, uri: str, password: str | None = None) -> str:
        assert self.challenge is not None
        self.nc += 1
        cnonce = secrets.token_hex(8)
        username = self.authname or self.user
        digest = compute_response(
            algorithm=self.challenge.algorithm,
            username=username,
            realm=self.challenge.realm,
            password=password if password is not None else self.password,
            nonce=self.challenge.nonce,
            method=method,
            uri=uri,
            qop="auth",
            nc=self.nc,
            cnonce=cnonce,
        )
        return str(
            DigestResponse(
                username=username,
                realm=self.challenge.realm,
                nonce=self.challenge.nonce,
                uri=uri,
                response=digest,
                algorithm=self.challenge.algorithm,
                cnonce=cnonce,
                qop="auth",
                nc=self.nc,
            )
        )

    def take(self, data: bytes) -> SipResponse:
        """Parse a response; remember its challenge if it is a 401."""
        message = parse_message(data)
        assert isinstance(message, SipResponse), message
        if message.status == 401:
            value = message.headers.get("WWW-Authenticate")
            assert value is not None
            self.challenge = DigestChallenge.parse(value)[0]
            self.nc = 0
        return message
