"""The options every phone-making command shares (``register``, ``call``, ``answer``), and the
one place that turns them into a :class:`~phone_sim.phone.config.PhoneConfig`."""

from __future__ import annotations

import argparse

from phone_sim.account import Account, AccountError, SipHost, SipTransport, parse_server
from phone_sim.call.session import CallConfig
from phone_sim.firmware import DEFAULT_MODEL, Model, newest_firmware, profile_for
from phone_sim.phone.aio import Phone, build_phone
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.registration import RegistrationSettings
from phone_sim.tls.client import TrustStore

__all__ = ["add_phone_options", "phone_config_from_args", "phone_from_args"]

#: The one default transport of every command: TLS, the case phone-sim exists for.
DEFAULT_TRANSPORT = "tls"


def add_phone_options(p: argparse.ArgumentParser, *, media: bool) -> None:
    """Add the registration options (and, with *media*, ``--media-encryption``) to *p*."""
    g = p.add_argument_group("the phone and its registration")
    g.add_argument("--server", required=True, metavar="HOST[:PORT]",
                   help="the registrar/PBX (default port 5061 for TLS, 5060 otherwise)")
    g.add_argument("--transport", default=DEFAULT_TRANSPORT, choices=["tls", "tcp", "udp"],
                   help=f"SIP transport (default {DEFAULT_TRANSPORT})")
    g.add_argument("--user", required=True, help="the SIP user (account username), e.g. 101")
    g.add_argument("--password", required=True, help="the digest password (never printed)")
    g.add_argument("--authname", help="the digest user name when it differs from --user")
    g.add_argument("--domain", help="the SIP domain of From/To/Request-URI "
                   "(default --servername, else the server host)")
    g.add_argument("--servername", metavar="NAME",
                   help="the server name configured on the phone: checked against the "
                   "certificate and sent as SNI (default the server host)")
    g.add_argument("--model", help=f"phone model (default {DEFAULT_MODEL.value})")
    g.add_argument("--firmware", help="firmware version (default the newest known: "
                   f"{newest_firmware(DEFAULT_MODEL)}, {newest_firmware(Model.D80)} on a D80)")
    g.add_argument("--ca", action="append", default=[], metavar="FILE",
                   help="private root CA (PEM) loaded onto the phone; repeatable")
    g.add_argument("--expires", type=int, default=300, metavar="SECONDS",
                   help="the registration period asked for (reregister, default 300)")
    g.add_argument("--timeout", type=float, default=32.0, metavar="SECONDS",
                   help="how long a registration attempt may take (default 32)")
    if media:
        g.add_argument("--media-encryption", choices=["sdes", "none"],
                       help="SDES-SRTP or plain RTP (default sdes over TLS, none otherwise)")


def phone_config_from_args(
    args: argparse.Namespace, *, auto_answer: bool = False
) -> PhoneConfig:
    """The :class:`PhoneConfig` the shared options describe."""
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
    account = Account(username=args.user, password=args.password, authname=args.authname,
                      host_primary=host, domain=args.domain, server_name=args.servername)
    return PhoneConfig(
        profile=profile_for(args.model or DEFAULT_MODEL, args.firmware),
        accounts=(account,),
        trust=TrustStore.from_files(args.ca) if args.ca else TrustStore(),
        registration=RegistrationSettings(register_timeout=args.timeout),
        calls=CallConfig(),
        auto_answer=auto_answer,
    )


def phone_from_args(args: argparse.Namespace, *, auto_answer: bool = False) -> Phone:
    """The phone the shared options describe."""
    return build_phone(phone_config_from_args(args, auto_answer=auto_answer))
