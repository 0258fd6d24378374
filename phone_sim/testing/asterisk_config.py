"""Render an Asterisk configuration directory from templates with ``@@NAME@@`` placeholders.

The project's own configuration is ``fixtures/asterisk/`` in the repository; a user may name
any directory written the same way. Rendering fills in ports, paths and certificate files
(:class:`AsteriskSettings`), writes ``pjsip_phones.conf`` with an endpoint, AOR and auth per
user (:class:`AsteriskUser`), and the 700 Hz WAV that extension 602 plays. The placeholders:

=====================  ===================================================================
``@@BIND_ADDRESS@@``    the address the SIP transports bind (127.0.0.1 in tests)
``@@TLS_PORT@@``        the TLS transport's port (5061 in compose, a free one in tests)
``@@UDP_PORT@@``        the UDP transport's port (5060 in compose)
``@@RTP_START@@``       the first RTP port (rtp.conf)
``@@RTP_END@@``         the last RTP port
``@@CERT_FILE@@``       the server certificate chain (PEM) of the TLS transport
``@@KEY_FILE@@``        its private key (PEM)
``@@SIP_DEBUG@@``       ``yes`` to log every SIP message on Asterisk's console
``@@CONFIG_DIR@@``      where the rendered files are (astetcdir)
``@@MODULE_DIR@@``      the modules of the Asterisk build (astmoddir)
``@@SBIN_DIR@@``        its ``sbin`` directory
``@@DATA_DIR@@``        astdatadir (sounds live under it)
``@@VAR_DIR@@``         the private state directory (lib, spool, log)
``@@RUN_DIR@@``         the control socket's directory (a short path)
``@@SOUNDS_DIR@@``      where the rendered test sounds are (extension 602)
``@@DPMA_ADDRESS@@``    where phones reach the DPMA emulator (``mdns_address``; empty: its own)
``@@DPMA_PORT@@``       its TLS port (``mdns_port``; empty: its own)
``@@REGISTRATION_ADDRESS@@`` where phones reach this Asterisk (a DPMA network's
                       ``registration_address``; compose: ``asterisk``)
=====================  ===================================================================

Besides Asterisk's own files, the directory holds ``res_digium_phone.conf``, the configuration
DPMA would read beside Asterisk's. Asterisk itself never loads it (``res_digium_phone`` is not
built); phone-sim's DPMA emulator serves it (``phone-sim lab --conf res_digium_phone.conf
--pjsip pjsip.conf --provisioning-only``), so the phones it provisions get exactly the users,
passwords and TLS port this Asterisk was rendered with: rendering writes
``res_digium_phone_phones.conf`` (a line and a phone per user, :func:`dpma_phones_conf`) from
the same list of users as ``pjsip_phones.conf``, and the emulator reads the passwords from the
rendered ``pjsip.conf``.

This module only computes text and writes files; starting Asterisk is
:mod:`phone_sim.testing.aio_asterisk`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from phone_sim.errors import UsageError
from phone_sim.testing import audio
from phone_sim.tls.pki import make_server_identity

__all__ = [
    "DEFAULT_SERVER_NAME",
    "PLACEHOLDERS",
    "AsteriskCerts",
    "AsteriskConfigError",
    "AsteriskSettings",
    "AsteriskUser",
    "default_users",
    "dpma_phones_conf",
    "fill",
    "make_asterisk_certs",
    "phones_conf",
    "render_config",
    "write_tone_wav",
]

#: Every placeholder a template may use.
PLACEHOLDERS = frozenset({
    "BIND_ADDRESS", "TLS_PORT", "UDP_PORT", "RTP_START", "RTP_END", "CERT_FILE", "KEY_FILE",
    "SIP_DEBUG", "CONFIG_DIR", "MODULE_DIR", "SBIN_DIR", "DATA_DIR", "VAR_DIR", "RUN_DIR",
    "SOUNDS_DIR", "DPMA_ADDRESS", "DPMA_PORT", "REGISTRATION_ADDRESS",
})

_PLACEHOLDER = re.compile(r"@@([A-Za-z0-9_]*)@@")
_USER = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
# A password lands in pjsip.conf as one value: no newline, no comment or section syntax.
_PASSWORD = re.compile(r"[!#-:<-Z^-~]{1,128}")
# What res_digium_phone.conf takes as an address (as the DPMA emulator reads it).
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]{0,251}[A-Za-z0-9])?")
_PHONE_DIGITS = re.compile(r"[0-9]{1,6}")
#: The name in the test certificate, and what the phones are configured to expect.
DEFAULT_SERVER_NAME = "pbx.phone-sim.test"
#: The files a rendered directory gets besides the templates.
PHONES_FILE = "pjsip_phones.conf"
DPMA_PHONES_FILE = "res_digium_phone_phones.conf"
#: Digium's OUI: the DPMA phones' MACs start with it.
DPMA_MAC_PREFIX = "00:0f:d3"
TONE_FILE = "tone-700.wav"
TONE_HZ = 700.0


class AsteriskConfigError(UsageError):
    """A template or a setting that cannot make an Asterisk configuration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AsteriskUser:
    """One phone Asterisk knows: an endpoint, an AOR and a digest auth of the same name."""

    user: str
    """The SIP user name (endpoint, AOR and auth section name, and the extension dialled)."""
    password: str = field(repr=False)
    """The digest password (never shown in ``repr()``)."""

    def __post_init__(self) -> None:
        if not _USER.fullmatch(self.user):
            raise AsteriskConfigError(
                f"bad Asterisk user {self.user!r}: use 1-64 letters, digits or _.+-"
            )
        if not _PASSWORD.fullmatch(self.password):
            raise AsteriskConfigError(
                f"the password of Asterisk user {self.user!r} must be 1-128 printable ASCII "
                "characters without spaces, quotes, backslashes, ';', '[' or ']'"
            )

    @property
    def mac(self) -> str | None:
        """The MAC of this user's phone in the DPMA configuration: Digium's OUI and the user's
        digits (``101`` -> ``00:0f:d3:00:01:01``); None (no DPMA phone) unless the user name
        is 1-6 digits."""
        if not _PHONE_DIGITS.fullmatch(self.user):
            return None
        digits = self.user.zfill(6)
        return f"{DPMA_MAC_PREFIX}:{digits[0:2]}:{digits[2:4]}:{digits[4:6]}"


def default_users(
    first: int = 101,
    last: int = 199,
    password: str = "1234",  # noqa: S107 - the vendor page's example, for test labs only
) -> tuple[AsteriskUser, ...]:
    """Users ``first`` .. ``last`` (the dialplan's ``_1XX``), all with ``password``."""
    if not 0 <= first <= last:
        raise AsteriskConfigError(f"bad user range {first}-{last}")
    return tuple(AsteriskUser(user=str(n), password=password) for n in range(first, last + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class AsteriskSettings:
    """The values rendered into the templates."""

    config_dir: Path
    """Where the rendered configuration is written (``asterisk -C <config_dir>/asterisk.conf``)."""
    module_dir: Path
    """The Asterisk build's modules (``<prefix>/lib/asterisk/modules``)."""
    sbin_dir: Path
    """The Asterisk build's ``sbin``."""
    var_dir: Path
    """Private state: ``lib`` (astdb), ``spool``, ``log``."""
    run_dir: Path
    """The control socket's directory; keep the path short (107 bytes for the socket)."""
    data_dir: Path
    """astdatadir; the rendered sounds go to ``<data_dir>/phone-sim``."""
    cert_file: Path
    """The TLS transport's certificate chain (PEM)."""
    key_file: Path
    """Its private key (PEM)."""
    bind_address: str = "127.0.0.1"
    """The address SIP binds."""
    tls_port: int = 5061
    """The TLS transport's port."""
    udp_port: int = 5060
    """The UDP transport's port."""
    rtp_start: int = 10000
    """The first port of the RTP range."""
    rtp_end: int = 10199
    """The last port of the RTP range."""
    sip_debug: bool = False
    """Log every SIP message on Asterisk's console."""
    users: tuple[AsteriskUser, ...] = field(default_factory=default_users, repr=False)
    """The phones (endpoint, AOR, auth each); default 101-199 with password 1234."""
    registration_address: str | None = None
    """Where phones reach this Asterisk, written into the DPMA configuration (compose:
    ``asterisk``); default ``bind_address``, or 127.0.0.1 when that is a wildcard."""
    dpma_address: str = ""
    """Where phones reach the DPMA emulator (its ``mdns_address`` and ``config_server_url``
    host; compose: ``lab``); empty: the emulator's own address."""
    dpma_port: int | None = None
    """The DPMA emulator's TLS port (``mdns_port``); None: the emulator's own."""

    def __post_init__(self) -> None:
        for name in ("tls_port", "udp_port", "rtp_start", "rtp_end", "dpma_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                raise AsteriskConfigError(f"{name} {port} is out of range (1-65535)")
        for name in ("registration_address", "dpma_address"):
            host = getattr(self, name)
            if host and not _HOST.fullmatch(host):
                raise AsteriskConfigError(
                    f"{name} {host!r} is not a host name or an IP address"
                )
        if self.rtp_end - self.rtp_start < 3:
            raise AsteriskConfigError(
                f"RTP range {self.rtp_start}-{self.rtp_end} is too small (a call takes two "
                "ports)"
            )
        if self.tls_port == self.udp_port:
            raise AsteriskConfigError(f"TLS and UDP both on port {self.tls_port}")
        names = [u.user for u in self.users]
        if len(set(names)) != len(names):
            raise AsteriskConfigError("an Asterisk user is listed twice")
        macs: dict[str, str] = {}
        for user in self.users:
            if user.mac is not None and macs.setdefault(user.mac, user.user) != user.user:
                raise AsteriskConfigError(
                    f"Asterisk users {macs[user.mac]!r} and {user.user!r} would both have the "
                    f"DPMA phone {user.mac}: drop the leading zeros"
                )

    @property
    def phone_registration_address(self) -> str:
        """:attr:`registration_address`, or its default."""
        if self.registration_address:
            return self.registration_address
        wildcard = self.bind_address in ("0.0.0.0", "::")  # noqa: S104 - a comparison
        return "127.0.0.1" if wildcard else self.bind_address

    @property
    def sounds_dir(self) -> Path:
        """Where the rendered test sounds are."""
        return self.data_dir / "phone-sim"

    def values(self) -> dict[str, str]:
        """The placeholder values, by name."""
        return {
            "BIND_ADDRESS": self.bind_address,
            "TLS_PORT": str(self.tls_port),
            "UDP_PORT": str(self.udp_port),
            "RTP_START": str(self.rtp_start),
            "RTP_END": str(self.rtp_end),
            "CERT_FILE": str(self.cert_file),
            "KEY_FILE": str(self.key_file),
            "SIP_DEBUG": "yes" if self.sip_debug else "no",
            "CONFIG_DIR": str(self.config_dir),
            "MODULE_DIR": str(self.module_dir),
            "SBIN_DIR": str(self.sbin_dir),
            "DATA_DIR": str(self.data_dir),
            "VAR_DIR": str(self.var_dir),
            "RUN_DIR": str(self.run_dir),
            "SOUNDS_DIR": str(self.sounds_dir),
            "DPMA_ADDRESS": self.dpma_address,
            "DPMA_PORT": "" if self.dpma_port is None else str(self.dpma_port),
            "REGISTRATION_ADDRESS": self.phone_registration_address,
        }


def fill(template: str, values: Mapping[str, str], *, source: str = "template") -> str:
    """``template`` with every ``@@NAME@@`` replaced; an unknown name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            line = template.count("\n", 0, match.start()) + 1
            known = ", ".join(sorted(values))
            raise AsteriskConfigError(
                f"{source}:{line}: unknown placeholder @@{name}@@ (known: {known})"
            )
        return values[name]

    return _PLACEHOLDER.sub(replace, template)


def phones_conf(users: Iterable[AsteriskUser]) -> str:
    """``pjsip_phones.conf``: an endpoint, AOR and auth per user, from pjsip.conf's templates
    ``phone-endpoint``, ``phone-aor`` and ``phone-auth``."""
    lines = ["; Written by phone_sim.testing.asterisk_config: one phone per user.", ""]
    for u in users:
        lines += [
            f"[{u.user}](phone-endpoint)",
            f"auth = {u.user}",
            f"aors = {u.user}",
            f'callerid = "Phone {u.user}" <{u.user}>',
            f"[{u.user}](phone-aor)",
            f"[{u.user}](phone-auth)",
            f"username = {u.user}",
            f"password = {u.password}",
            "",
        ]
    return "\n".join(lines)


def dpma_phones_conf(users: Iterable[AsteriskUser]) -> str:
    """``res_digium_phone_phones.conf``: a DPMA line (from res_digium_phone.conf's template
    ``phone-line``) and a phone with :attr:`AsteriskUser.mac` for each user that has one. The
    passwords stay in ``pjsip_phones.conf``: the emulator reads them from ``pjsip.conf``."""
    lines = ["; Written by phone_sim.testing.asterisk_config: a DPMA line and phone per user.",
             ""]
    for u in users:
        if u.mac is None:
            continue
        lines += [
            f"[{u.user}](phone-line)",
            f"line_label = Phone {u.user}",
            "",
            f"[phone-{u.user}]",
            "type = phone",
            f"mac = {u.mac}",
            f"line = {u.user}",
            f"full_name = Phone {u.user}",
            "",
        ]
    return "\n".join(lines)


def write_tone_wav(path: Path, frequency_hz: float = TONE_HZ, seconds: float = 20.0) -> Path:
    """Write an 8 kHz 16-bit mono WAV of a sine at ``frequency_hz`` (-10 dBFS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return audio.write_tone_wav(path, frequency_hz, seconds, amplitude=0.316)


@dataclass(frozen=True, slots=True, kw_only=True)
class AsteriskCerts:
    """The TLS files of a test Asterisk. TEST-ONLY key, generated, never committed."""

    ca_file: Path
    """The private root CA to load onto the phones (``TrustStore.from_files``)."""
    cert_file: Path
    """The server certificate chain Asterisk presents (``cert_file``)."""
    key_file: Path
    """Its private key (``priv_key_file``), mode 0600."""
    server_name: str
    """The DNS name in the certificate: configure the phones with it (``server_name``)."""


def make_asterisk_certs(
    directory: Path,
    server_name: str = DEFAULT_SERVER_NAME,
    addresses: tuple[str, ...] = ("127.0.0.1",),
) -> AsteriskCerts:
    """A fresh root CA and a server certificate for ``server_name`` and ``addresses``, from
    phone-sim's own test PKI (:func:`phone_sim.tls.pki.make_server_identity`)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, chain_pem, key_pem = make_server_identity([server_name, *addresses])
    certs = AsteriskCerts(
        ca_file=directory / "ca.pem",
        cert_file=directory / "asterisk.crt",
        key_file=directory / "asterisk.key",
        server_name=server_name,
    )
    certs.ca_file.write_bytes(ca_pem)
    certs.cert_file.write_bytes(chain_pem)
    certs.key_file.touch(mode=0o600)
    certs.key_file.chmod(0o600)
    certs.key_file.write_bytes(key_pem)
    return certs


def render_config(template_dir: Path, settings: AsteriskSettings) -> Path:
    """Render every file of ``template_dir`` into ``settings.config_dir``; return the path of
    the rendered ``asterisk.conf``.

    Also writes ``pjsip_phones.conf`` and ``res_digium_phone_phones.conf`` (the users), the
    test sound, and creates the state directories. ``README*`` files are not configuration
    and are skipped.
    """
    if not template_dir.is_dir():
        raise AsteriskConfigError(f"Asterisk configuration directory {template_dir} not found")
    if not (template_dir / "asterisk.conf").is_file():
        raise AsteriskConfigError(
            f"{template_dir} has no asterisk.conf: name a directory laid out like "
            "fixtures/asterisk (asterisk.conf with its [directories] as @@NAME@@ placeholders)"
        )
    values = settings.values()
    out = settings.config_dir
    out.mkdir(parents=True, exist_ok=True)
    for template in sorted(template_dir.iterdir()):
        if not template.is_file() or template.name.upper().startswith("README"):
            continue
        try:
            text = template.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise AsteriskConfigError(f"{template} is not UTF-8 text: {exc}") from None
        (out / template.name).write_text(fill(text, values, source=str(template)),
                                         encoding="utf-8")
    (out / PHONES_FILE).write_text(phones_conf(settings.users), encoding="utf-8")
    (out / DPMA_PHONES_FILE).write_text(dpma_phones_conf(settings.users), encoding="utf-8")
    for sub in ("lib", "spool", "log", "agi-bin"):
        (settings.var_dir / sub).mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    write_tone_wav(settings.sounds_dir / TONE_FILE)
    return out / "asterisk.conf"


def _port_range(text: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    if not (dash and first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        raise argparse.ArgumentTypeError(f"bad port range {text!r}: write it as 10000-10199")
    return int(first), int(last)


def _user_range(text: str) -> tuple[int, int]:
    try:
        return _port_range(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"bad user range {text!r}: write it as 101-199") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m phone_sim.testing.asterisk_config certs|render ...`` (docker-compose)."""
    parser = argparse.ArgumentParser(
        prog="python -m phone_sim.testing.asterisk_config",
        description="Make the TLS files of a test Asterisk, or render an Asterisk "
                    "configuration directory with @@NAME@@ placeholders (fixtures/asterisk).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs", help="a root CA and a server certificate (TEST-ONLY key)")
    certs.add_argument("--out", type=Path, required=True, help="directory for the files")
    certs.add_argument("--name", default=DEFAULT_SERVER_NAME,
                       help=f"the server name in the certificate (default {DEFAULT_SERVER_NAME})")
    certs.add_argument("--address", action="append", default=[],
                       help="an IP address or host name also in the certificate; repeatable")
    certs.add_argument("--force", action="store_true",
                       help="make new files even when the directory already has them")
    render = sub.add_parser("render", help="fill in a configuration directory")
    render.add_argument("--templates", type=Path, required=True,
                        help="the directory with placeholders (fixtures/asterisk)")
    render.add_argument("--out", type=Path, required=True,
                        help="where to write it (also its astetcdir)")
    render.add_argument("--prefix", type=Path, required=True,
                        help="the Asterisk build's prefix (modules, sbin)")
    render.add_argument("--certs", type=Path, required=True,
                        help="the directory `certs` wrote (asterisk.crt, asterisk.key)")
    render.add_argument("--state", type=Path, required=True,
                        help="private state directory (lib, spool, log)")
    render.add_argument("--run", type=Path, default=Path("/run/asterisk"),
                        help="control socket directory (default /run/asterisk)")
    render.add_argument("--bind", default="0.0.0.0",  # noqa: S104 - a server in a container
                        help="the address SIP binds (default 0.0.0.0)")
    render.add_argument("--tls-port", type=int, default=5061)
    render.add_argument("--udp-port", type=int, default=5060)
    render.add_argument("--rtp", type=_port_range, default=(10000, 10199),
                        help="RTP port range (default 10000-10199)")
    render.add_argument("--users", type=_user_range, default=(101, 199),
                        help="the phones' users (default 101-199)")
    render.add_argument("--password", default="1234", help="their password (default 1234)")
    render.add_argument("--sip-debug", action="store_true",
                        help="log every SIP message on Asterisk's console")
    render.add_argument("--registration-address", metavar="HOST",
                        help="where phones provisioned by DPMA reach this Asterisk (default "
                             "--bind, or 127.0.0.1 when that is a wildcard)")
    render.add_argument("--dpma-address", metavar="HOST", default="",
                        help="where phones reach the DPMA emulator (default: its own address)")
    render.add_argument("--dpma-port", type=int, metavar="PORT",
                        help="the DPMA emulator's TLS port (default: its own)")
    try:
        args = parser.parse_args(argv)
        if args.command == "certs":
            done = args.out / "asterisk.key"
            if done.exists() and not args.force:
                print(f"{args.out}: certificates already there (--force to replace them)")
                return 0
            made = make_asterisk_certs(args.out, args.name, tuple(args.address))
            print(f"{made.cert_file} for {made.server_name}; load {made.ca_file} onto the phones")
            return 0
        settings = AsteriskSettings(
            config_dir=args.out, module_dir=args.prefix / "lib" / "asterisk" / "modules",
            sbin_dir=args.prefix / "sbin", var_dir=args.state, run_dir=args.run,
            data_dir=args.out / "data", cert_file=args.certs / "asterisk.crt",
            key_file=args.certs / "asterisk.key", bind_address=args.bind,
            tls_port=args.tls_port, udp_port=args.udp_port, rtp_start=args.rtp[0],
            rtp_end=args.rtp[1], sip_debug=args.sip_debug,
            users=default_users(args.users[0], args.users[1], args.password),
            registration_address=args.registration_address, dpma_address=args.dpma_address,
            dpma_port=args.dpma_port,
        )
        print(render_config(args.templates, settings))
        return 0
    except (UsageError, OSError) as exc:
        print(f"asterisk_config: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
