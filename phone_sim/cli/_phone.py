"""The options every phone-making command shares (``register``, ``call``, ``answer``), and the
one place that turns them into a :class:`~phone_sim.phone.config.PhoneConfig`.

Everything that can be checked is checked here, before the phone is built and anything is
sent: the password's source, the model and firmware, the server, and (for ``call``) the
target. The asyncio phone is imported only when a phone is built, so that ``--help`` and the
``tls-*`` commands do not load the media stack.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from phone_sim.account import Account, AccountError, SipHost, SipTransport, parse_server
from phone_sim.call.session import CallConfig
from phone_sim.cli._help import firmware_help, model_help
from phone_sim.errors import PhoneSimError, UsageError
from phone_sim.firmware import DEFAULT_MODEL, profile_for
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.registration import RegistrationRefused, RegistrationSettings
from phone_sim.sip.uri import SipUri
from phone_sim.tls.client import TrustStore
from phone_sim.tls.verdict import TlsError

if TYPE_CHECKING:
    from phone_sim.phone.aio import Phone

__all__ = [
    "PASSWORD_ENV",
    "add_phone_options",
    "call_target",
    "error_json",
    "password_from_args",
    "phone_config_from_args",
    "phone_from_args",
]

#: The one default transport of every command: TLS, the case phone-sim exists for.
DEFAULT_TRANSPORT = "tls"
#: Where the password comes from when no option gives it.
PASSWORD_ENV = "PHONE_SIM_PASSWORD"  # noqa: S105 - the variable's name, not a password


def add_phone_options(p: argparse.ArgumentParser, *, media: bool) -> None:
    """Add the registration options (and, with *media*, ``--media-encryption``) to *p*."""
    g = p.add_argument_group("the phone and its registration")
    g.add_argument("--server", required=True, metavar="HOST[:PORT]",
                   help="the registrar/PBX (default port 5061 for TLS, 5060 otherwise)")
    g.add_argument("--transport", default=DEFAULT_TRANSPORT, choices=["tls", "tcp", "udp"],
                   help=f"SIP transport (default {DEFAULT_TRANSPORT})")
    g.add_argument("--user", required=True, help="the SIP user (account username), e.g. 101")
    g.add_argument("--password-file", metavar="FILE",
                   help="read the digest password from the first line of FILE")
    g.add_argument("--password",
                   help=f"the digest password (never printed); other local users can see it "
                   f"in ps, so prefer --password-file or the {PASSWORD_ENV} environment "
                   "variable, used when neither option is given")
    g.add_argument("--authname", help="the digest user name when it differs from --user")
    g.add_argument("--domain", help="the SIP domain of From/To/Request-URI "
                   "(default --servername, else the server host)")
    g.add_argument("--servername", metavar="NAME",
                   help="the server name configured on the phone: checked against the "
                   "certificate and sent as SNI (default the server host)")
    g.add_argument("--model", help=model_help())
    g.add_argument("--firmware", help=firmware_help())
    g.add_argument("--ca", action="append", default=[], metavar="FILE",
                   help="private root CA (PEM) loaded onto the phone; repeatable")
    g.add_argument("--expires", type=int, default=300, metavar="SECONDS",
                   help="the registration period asked for (reregister, default 300)")
    g.add_argument("--timeout", type=float, default=32.0, metavar="SECONDS",
                   help="how long a registration attempt may take (default 32)")
    if media:
        g.add_argument("--media-encryption", choices=["sdes", "none"],
                       help="SDES-SRTP or plain RTP (default sdes over TLS, none otherwise)")


def password_from_args(args: argparse.Namespace) -> str:
    """The password, from ``--password-file``, ``--password`` or ``$PHONE_SIM_PASSWORD``."""
    if args.password is not None and args.password_file is not None:
        raise UsageError("--password and --password-file exclude each other: give one")
    if args.password_file is not None:
        path = args.password_file
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
        except OSError as exc:
            raise UsageError(f"--password-file {path}: cannot read it "
                             f"({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise UsageError(f"--password-file {path}: not UTF-8 text") from None
        password = first.rstrip("\r\n")
        if not password:
            raise UsageError(f"--password-file {path}: the file is empty (the password is "
                             "its first line)")
        return password
    if args.password is not None:
        if not args.password:
            raise UsageError("--password is empty")
        return str(args.password)
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is None:
        raise UsageError(f"no password: give --password-file FILE, set {PASSWORD_ENV}, or "
                         "give --password")
    if not from_env:
        raise UsageError(f"{PASSWORD_ENV} is empty")
    return from_env


def phone_config_from_args(
    args: argparse.Namespace, *, auto_answer: bool = False
) -> PhoneConfig:
    """The :class:`PhoneConfig` the shared options describe."""
    password = password_from_args(args)
    transport = SipTransport.parse(args.transport)
    server, port = parse_server(args.server, transport)
    if args.expires < 1:
        raise AccountError("--expires must be at least 1 second")
    if not args.timeout > 0:
        raise AccountError("--timeout must be positive")
    encryption = getattr(args, "media_encryption", None) or (
        "sdes" if transport is SipTransport.TLS else "none"
    )
    host = SipHost(server=server, port=port, transport=transport, reregister=args.expires,
                   media_encryption=None if encryption == "none" else encryption)
    account = Account(username=args.user, password=password, authname=args.authname,
                      host_primary=host, domain=args.domain, server_name=args.servername)
    return PhoneConfig(
        profile=profile_for(args.model or DEFAULT_MODEL, args.firmware),
        accounts=(account,),
        trust=TrustStore.from_files(args.ca) if args.ca else TrustStore(),
        registration=RegistrationSettings(register_timeout=args.timeout),
        calls=CallConfig(),
        auto_answer=auto_answer,
    )


def call_target(text: str, config: PhoneConfig) -> SipUri:
    """The URI ``call --to`` dials, checked as ``Phone.dial()`` would, before registering."""
    from phone_sim.phone.core import parse_target  # noqa: PLC0415 - with the phone core

    account = config.primary_account
    return parse_target(text, account.domain_for(account.host_primary))


def phone_from_args(config: PhoneConfig) -> Phone:
    """The phone *config* describes (the asyncio phone is loaded here, not at import)."""
    from phone_sim.phone.aio import build_phone  # noqa: PLC0415 - keeps --help light

    return build_phone(config)


def error_json(error: PhoneSimError) -> dict[str, Any]:
    """A failure as ``--json`` prints it: the message, its kind, the exit status, and the
    SIP status or the TLS verdict when there is one."""
    obj: dict[str, Any] = {"error": str(error), "kind": type(error).__name__,
                           "exit_code": error.exit_code}
    if isinstance(error, RegistrationRefused):
        obj["status"] = error.status
    if isinstance(error, TlsError) and error.verdict is not None:
        obj["tls"] = error.verdict.to_json()
    return obj
