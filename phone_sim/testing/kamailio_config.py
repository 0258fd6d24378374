"""What a TEST-ONLY Kamailio registrar/proxy is configured with, and what its location table
holds: the sans-I/O half of :mod:`phone_sim.testing.aio_kamailio`.

:class:`KamailioConfig` and its :class:`SipUser` accounts become ``kamailio.cfg`` and
``tls.cfg`` (:func:`render_kamailio_cfg`, :func:`render_tls_cfg`) from the templates shipped in
``phone_sim/testing/data/kamailio/``; :func:`bindings_from_rpc` and :func:`parse_ul_dump` read
the location table (``ul.dump``) into :class:`Binding` values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phone_sim.testing.errors import PeerUsageError

__all__ = [
    "DEFAULT_USERS",
    "TEMPLATES",
    "Binding",
    "KamailioConfig",
    "SipUser",
    "Transport",
    "bindings_from_rpc",
    "make_users",
    "parse_ul_dump",
    "render_kamailio_cfg",
    "render_tls_cfg",
]

#: The templates of kamailio.cfg and tls.cfg (``@@NAME@@`` placeholders), shipped as package data.
TEMPLATES = Path(__file__).resolve().parent / "data" / "kamailio"

Transport = Literal["udp", "tcp", "tls"]

_USER_RE = re.compile(r"^[A-Za-z0-9_.!~*'()+-]{1,64}$")
_PASSWORD_RE = re.compile(r'^[^"\\\r\n$]{1,128}$')


@dataclass(frozen=True, kw_only=True)
class SipUser:
    """An account in Kamailio's user table."""

    user: str
    """The SIP user part of the AOR (From/To user)."""
    password: str = field(repr=False)
    """The digest password (plain text in the table; TEST-ONLY)."""
    authname: str | None = None
    """The digest username, when it differs from ``user``."""

    def __post_init__(self) -> None:
        if not _USER_RE.match(self.user) or (
            self.authname is not None and not _USER_RE.match(self.authname)
        ):
            raise PeerUsageError(
                f"unsupported SIP user or authname: {self.user!r}/{self.authname!r}"
            )
        if not _PASSWORD_RE.match(self.password):
            raise PeerUsageError(f"password for {self.user!r} has characters the cfg cannot hold")

    @property
    def auth_username(self) -> str:
        """The username of the digest credentials."""
        return self.authname or self.user


#: The default accounts; TEST-ONLY passwords for a loopback-only server.
DEFAULT_USERS = (
    SipUser(user="101", password="test-secret-101"),  # noqa: S106
    SipUser(user="102", password="test-secret-102"),  # noqa: S106
    SipUser(user="103", password="test-secret-103"),  # noqa: S106
)


@dataclass(frozen=True, kw_only=True)
class KamailioConfig:
    """What the generated kamailio.cfg does."""

    users: tuple[SipUser, ...] = DEFAULT_USERS
    """The accounts allowed to register and call."""
    domain: str = "pbx.test"
    """The SIP domain (a Kamailio alias) and the digest realm phones see ($fd)."""
    default_expires: int = 60
    """Expires granted when the REGISTER asks none."""
    min_expires: int = 2
    """Smaller requested expiries are raised to this."""
    max_expires: int = 300
    """Larger requested expiries are lowered to this."""
    auth_methods: tuple[str, ...] = ("INVITE", "SUBSCRIBE", "REFER", "PUBLISH")
    """Initial requests challenged with 407, as Asterisk challenges a phone's INVITE.

    Others (OPTIONS, NOTIFY, MESSAGE) are relayed unauthenticated, so that a test can send
    them to a phone through Kamailio, as the PBX itself would. REGISTER is always challenged.
    """
    tls_method: str = "TLSv1.2+"
    """The tls module ``method`` (``TLSv1.2+`` takes 1.2 and 1.3, refuses 1.1)."""
    tcp_connection_lifetime: int = 3605
    """Seconds an idle TCP/TLS connection is kept."""
    debug: int = 2
    """Kamailio log level (2 info, 3 debug)."""
    max_connections: int = 4096
    """``tcp_max_connections`` and ``tls_max_connections`` (load tests hold one per phone)."""
    shm_mb: int = 128
    """Shared memory (``-m``); TLS connections live there, roughly 50-60 KB each."""
    children: int = 2
    """UDP worker processes per socket and TCP/TLS workers (``children``, ``tcp_children``)."""

    def __post_init__(self) -> None:
        if self.max_connections < 16 or self.shm_mb < 16 or not 1 <= self.children <= 64:
            raise PeerUsageError("need max_connections >= 16, shm_mb >= 16, 1 <= children <= 64")
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise PeerUsageError("need 0 < min_expires <= default_expires <= max_expires")
        for method in self.auth_methods:
            if not re.match(r"^[A-Z]{2,16}$", method) or method in ("ACK", "CANCEL", "REGISTER"):
                raise PeerUsageError(f"cannot challenge method {method!r}")
        if not re.match(r"^[A-Za-z0-9.-]+$", self.domain):
            raise PeerUsageError(f"unsupported domain {self.domain!r}")


@dataclass(frozen=True, kw_only=True)
class Binding:
    """One contact in Kamailio's location table, from ``ul.dump``."""

    aor: str
    """The address of record (the user; usrloc runs without domains)."""
    contact: str
    """The Contact URI as the phone registered it."""
    expires: int
    """Seconds left, as kamcmd prints them."""
    received: str | None
    """The source the REGISTER came from (``sip:ip:port;transport=..``) if it was fixed."""
    socket: str
    """Kamailio's socket the phone is bound to, e.g. ``tls:127.0.0.1:5061``."""
    user_agent: str
    """The phone's User-Agent."""
    call_id: str
    """The Call-ID of the REGISTER."""
    cseq: int
    """Its CSeq number."""
    tcpconn_id: int
    """Kamailio's id of the TCP/TLS connection the phone registered on (-1 for UDP)."""


def make_users(count: int, *, first: int = 1000) -> tuple[SipUser, ...]:
    """``count`` TEST-ONLY accounts ``first``, ``first+1``, ... with password ``pw-<user>``."""
    return tuple(SipUser(user=str(n), password=f"pw-{n}") for n in range(first, first + count))


def _cfg_user_lines(users: Iterable[SipUser]) -> str:
    lines = []
    for user in users:
        lines.append(f'\t$sht(users=>{user.auth_username}) = "{user.password}";')
        lines.append(f'\t$sht(owners=>{user.auth_username}) = "{user.user}";')
    return "\n".join(lines) or "\tnoop;"


def _fill(template: str, values: dict[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace(f"@@{key}@@", value)
    left = re.findall(r"@@[A-Z_]+@@", out)
    if left:
        raise PeerUsageError(f"template placeholders left unfilled: {sorted(set(left))}")
    return out


def _binding(aor: str, contact: dict[str, Any]) -> Binding:
    received = str(contact.get("Received", "[not set]"))
    expires = contact.get("Expires", 0)
    return Binding(
        aor=aor,
        contact=str(contact.get("Address", "")),
        # "permanent" or "deleted" instead of seconds count as 0 here.
        expires=int(expires) if str(expires).lstrip("-").isdigit() else 0,
        received=None if received == "[not set]" else received,
        socket=str(contact.get("Socket", "")),
        user_agent=str(contact.get("User-Agent", "")),
        call_id=str(contact.get("Call-ID", "")),
        cseq=int(contact.get("CSeq", 0)),
        tcpconn_id=int(contact.get("Tcpconn-Id", -1)),
    )


def bindings_from_rpc(result: Any) -> list[Binding]:
    """Bindings from the JSON-RPC result of ``ul.dump`` (or of one ``ul.lookup``)."""
    bindings: list[Binding] = []
    if isinstance(result, dict) and "AoR" in result:  # ul.lookup
        infos: list[Any] = [{"Info": result}]
    else:
        infos = [
            info
            for domain in (result or {}).get("Domains", [])
            for info in domain.get("Domain", {}).get("AoRs", [])
        ]
    for info in infos:
        record = info.get("Info", {})
        for entry in record.get("Contacts", []):
            bindings.append(_binding(str(record.get("AoR", "")), entry.get("Contact", {})))
    return bindings


_UL_FIELD = re.compile(r"^\s*([A-Za-z-]+): (.*)$")


def parse_ul_dump(text: str) -> list[Binding]:
    """Parse the text ``kamcmd ul.dump`` prints into bindings."""
    bindings: list[Binding] = []
    aor: str | None = None
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        match = _UL_FIELD.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key in ("AoR", "Address"):
            if current is not None and aor is not None:
                bindings.append(_binding(aor, current))
            current = {"Address": value} if key == "Address" else None
            if key == "AoR":
                aor = value
        elif current is not None:
            current.setdefault(key, value)
    if current is not None and aor is not None:
        bindings.append(_binding(aor, current))
    return bindings


def render_kamailio_cfg(
    config: KamailioConfig,
    *,
    udp_port: int,
    tcp_port: int,
    tls_port: int,
    ctl_socket: Path,
    rpc_fifo: Path,
    run_dir: Path,
) -> str:
    """The text of ``kamailio.cfg`` for ``config``, listening on 127.0.0.1 on those ports."""
    values = {
        "DEBUG": str(config.debug),
        "MAX_CONNECTIONS": str(config.max_connections),
        "OPEN_FILES": str(2 * config.max_connections + 256),
        "CHILDREN": str(config.children),
        "UDP_PORT": str(udp_port),
        "TCP_PORT": str(tcp_port),
        "TLS_PORT": str(tls_port),
        "DOMAIN": config.domain,
        "TCP_LIFETIME": str(config.tcp_connection_lifetime),
        "CTL_SOCKET": str(ctl_socket),
        "RPC_FIFO": str(rpc_fifo),
        "RUN_DIR": str(run_dir),
        "DEFAULT_EXPIRES": str(config.default_expires),
        "MIN_EXPIRES": str(config.min_expires),
        "MAX_EXPIRES": str(config.max_expires),
        "AUTH_METHODS": (
            f'is_method("{"|".join(config.auth_methods)}")' if config.auth_methods else "0"
        ),
        "USERS": _cfg_user_lines(config.users),
    }
    template = (TEMPLATES / "kamailio.cfg.tmpl").read_text(encoding="utf-8")
    return _fill(template, values)


def render_tls_cfg(config: KamailioConfig, *, server_cert: Path, server_key: Path,
                   ca_cert: Path) -> str:
    """The text of ``tls.cfg``: the server certificate and key Kamailio presents."""
    values = {
        "TLS_METHOD": config.tls_method,
        "SERVER_KEY": str(server_key),
        "SERVER_CERT": str(server_cert),
        "CA_CERT": str(ca_cert),
    }
    template = (TEMPLATES / "tls.cfg.tmpl").read_text(encoding="utf-8")
    return _fill(template, values)
