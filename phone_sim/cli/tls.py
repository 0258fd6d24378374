"""``phone-sim tls-check``, ``tls-error`` and ``tls-matrix``: the phone's TLS verdict.

Exit statuses: 0 the phone connects (or the matrix matches the golden table), 1 the phone
would refuse (or a cell differs), 2 a usage or network error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from phone_sim.cli._help import firmware_help, model_help
from phone_sim.errors import UsageError
from phone_sim.firmware import (
    DEFAULT_MODEL,
    FIRMWARE_CLASSES,
    FirmwareProfile,
    profile_for,
)
from phone_sim.tls._openssl import openssl_version
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.aio_matrix import run_matrix
from phone_sim.tls.client import KeyLogWriter, TlsClientContext, TrustStore
from phone_sim.tls.crl import check_crl, load_crl
from phone_sim.tls.flags import FLAG_INFO, CertVerifyFlag, decode_bitmask, flag_names
from phone_sim.tls.matrix import load_golden
from phone_sim.tls.verdict import (
    NotTlsPeer,
    TlsConnectError,
    TlsError,
    TlsVerdict,
)

__all__ = ["add_parser", "parse_target"]

DEFAULT_PORT = 5061


def add_parser(subparsers: Any) -> None:
    """Register ``tls-check``, ``tls-error`` and ``tls-matrix``."""
    check = subparsers.add_parser(
        "tls-check",
        help="TLS handshake as a given phone would do it, with its verdict and bitmask",
        description="Connect to HOST[:PORT] (default port 5061) as a D-Series phone would and "
        "report its verdict: ok/fail, the pjlib bitmask, and for each flag a cause and a fix. "
        "Exit 0 when the phone connects, 1 when it would refuse, 2 on a usage or network error.",
    )
    check.add_argument("target", metavar="HOST[:PORT]", help="server to check, e.g. pbx:5061")
    check.add_argument(
        "--servername",
        metavar="NAME",
        help="the server name the phone is configured with "
        "(checked against the certificate and sent as SNI; default HOST)",
    )
    check.add_argument("--model", help=model_help())
    check.add_argument("--firmware", help=firmware_help())
    check.add_argument(
        "--ca",
        action="append",
        default=[],
        metavar="FILE",
        help="private root CA (PEM) loaded onto the phone; repeatable",
    )
    check.add_argument(
        "--crl",
        metavar="FILE",
        help="also check revocation against this CRL (beyond the phone, which never does)",
    )
    check.add_argument(
        "--allow-wildcard",
        action="store_true",
        help="set tls_allow_wildcard_certs=1 (firmware >= 2_9_2, D80 >= 1_12_1)",
    )
    check.add_argument(
        "--at", metavar="ISO-DATE", help="the phone's clock, e.g. 2031-01-01 (default now)"
    )
    check.add_argument(
        "--all-firmwares",
        action="store_true",
        help="one row per firmware class (--model/--firmware do not apply)",
    )
    check.add_argument(
        "--keylog",
        metavar="FILE",
        help="append NSS key-log lines "
        "(default $SSLKEYLOGFILE) so Wireshark can decrypt the signalling",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="connect and handshake timeout in seconds (default 10)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the OpenSSL version and every raw OpenSSL error",
    )
    check.set_defaults(func=_tls_check)

    err = subparsers.add_parser(
        "tls-error",
        help="decode a phone's TLS error bitmask (e.g. 0x40000022)",
        description="Decode a pjlib TLS error bitmask into flag names and meanings.",
    )
    err.add_argument("mask", metavar="BITMASK",
                     help="hex as the phone shows it: 0x40000022, or 40000022")
    err.add_argument("--json", action="store_true", help="print one JSON object")
    err.set_defaults(func=_tls_error)

    matrix = subparsers.add_parser(
        "tls-matrix",
        help="every firmware class against every certificate kind, checked against the golden "
        "table",
        description="Generate a test PKI, serve each certificate kind from a local TLS server on "
        "127.0.0.1, and print the firmware class x certificate table of verdicts and bitmasks. "
        "Exit 0 when every cell matches the hand-written golden table, 1 otherwise.",
    )
    matrix.add_argument(
        "--golden",
        metavar="FILE",
        help="golden table (default fixtures/tls/golden.txt of the checkout)",
    )
    matrix.add_argument("--json", action="store_true", help="print one JSON object")
    matrix.set_defaults(func=_tls_matrix)


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if not text:
        raise UsageError("empty target: give HOST[:PORT]")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise UsageError(f"bad target {text!r}: unclosed '[' in IPv6 address")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise UsageError(f"bad target {text!r}: expected ':PORT' after ']'")
        return host, _port(rest[1:], text)
    if text.count(":") > 1:  # a bare IPv6 address
        return text, default_port
    host, sep, port = text.partition(":")
    if not host:
        raise UsageError(f"bad target {text!r}: no host")
    return host, (_port(port, text) if sep else default_port)


def _port(text: str, target: str) -> int:
    # ASCII digits only: str.isdigit() also takes '²' (which int() refuses) and '٥٠٦١'.
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise UsageError(f"bad target {target!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def _parse_at(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not an ISO date: use e.g. 2031-01-01 or 2031-01-01T12:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _keylog(args: argparse.Namespace) -> KeyLogWriter | None:
    path = args.keylog or os.environ.get("SSLKEYLOGFILE")
    return KeyLogWriter(path) if path else None


def _tls_check(args: argparse.Namespace) -> int:
    host, port = parse_target(args.target)
    server_name = args.servername or host
    at = _parse_at(args.at)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.all_firmwares and (args.model or args.firmware or args.allow_wildcard):
        raise UsageError(
            "--all-firmwares tries every firmware class: --model, --firmware and "
            "--allow-wildcard do not apply"
        )
    trust = TrustStore.from_files(args.ca)
    crl = None
    if args.crl:
        try:
            with open(args.crl, "rb") as f:
                crl = load_crl(f.read())
        except OSError as exc:
            raise UsageError(f"cannot read CRL file {args.crl}: {exc.strerror}") from None
    profile = None
    if not args.all_firmwares:
        profile = profile_for(
            args.model or DEFAULT_MODEL, args.firmware, allow_wildcard=args.allow_wildcard
        )
    keylog = _keylog(args)
    target = _Target(
        host=host,
        port=port,
        server_name=server_name,
        trust=trust,
        at=at,
        keylog=keylog,
        timeout=args.timeout,
    )
    try:
        if profile is None:
            profiles = [c.profile for c in FIRMWARE_CLASSES]
            verdicts = asyncio.run(_check_many(target, profiles))
            return _report_many(args, host, port, verdicts)
        verdict, error = asyncio.run(_attempt(target, profile))
    finally:
        if keylog is not None:
            keylog.close()
    if crl is not None and verdict.certificates:
        diag = check_crl(crl, verdict.certificates, trust.ca_certificates, at=at)
        verdict = dataclasses.replace(verdict, crl=diag)
    if args.json:
        obj = verdict.to_json()
        obj["server"] = f"{host}:{port}"
        if error is not None:
            obj["error"] = error
        print(json.dumps(obj, indent=2))
    else:
        print(_render(verdict, host, port, verbose=args.verbose))
    return 0 if verdict.connects else 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Target:
    host: str
    port: int
    server_name: str
    trust: TrustStore
    at: dt.datetime | None
    keylog: KeyLogWriter | None
    timeout: float


async def _attempt(target: _Target, profile: FirmwareProfile) -> tuple[TlsVerdict, str | None]:
    context = TlsClientContext(profile, target.trust, at=target.at, keylog=target.keylog)
    try:
        transport, _, verdict = await open_tls_connection(
            target.host,
            target.port,
            context=context,
            server_name=target.server_name,
            connect_timeout=target.timeout,
            handshake_timeout=target.timeout,
        )
    except (TlsConnectError, NotTlsPeer):
        raise  # network trouble: one line on stderr, exit 2
    except TlsError as exc:
        if exc.verdict is None:  # pragma: no cover - every TlsError from the client has one
            raise
        return exc.verdict, str(exc)
    transport.close()
    await asyncio.sleep(0)  # let the close_notify go out
    return verdict, None


async def _check_many(target: _Target, profiles: Sequence[FirmwareProfile]) -> list[TlsVerdict]:
    return [(await _attempt(target, profile))[0] for profile in profiles]


def _report_many(
    args: argparse.Namespace, host: str, port: int, verdicts: Sequence[TlsVerdict]
) -> int:
    # [?] The no-TLS class can never connect over TLS; it is shown but does not decide the exit
    # status, or --all-firmwares could never exit 0 (docs/tls.md).
    refused = [v for v in verdicts if v.profile.tls_supported and not v.connects]
    if args.json:
        print(
            json.dumps(
                {
                    "server": f"{host}:{port}",
                    "verdict": "fail" if refused else "ok",
                    "openssl_version": openssl_version(),
                    "results": [
                        {"class": c.id, **v.to_json()}
                        for c, v in zip(FIRMWARE_CLASSES, verdicts, strict=True)
                    ],
                },
                indent=2,
            )
        )
        return 1 if refused else 0
    rows = [("class", "firmware", "verdict", "bitmask", "flags / reason")]
    for fclass, v in zip(FIRMWARE_CLASSES, verdicts, strict=True):
        if not v.profile.tls_supported:
            verdict, mask, detail = "no TLS", "-", "firmware without TLS"
        else:
            verdict = ("ok" if v.enforced else "ok (not enforced)") if v.connects else "FAIL"
            mask = v.bitmask_hex if v.tls_version else "-"
            detail = "|".join(v.flags) if v.flags else ("" if v.tls_version else v.reason or "")
        rows.append((fclass.id, v.profile.label, verdict, mask, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"{host}:{port} as each firmware class (server name {verdicts[0].server_name})")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 1 if refused else 0


def _render(verdict: TlsVerdict, host: str, port: int, *, verbose: bool) -> str:
    p = verdict.profile
    lines = [f"{p.user_agent} -> {host}:{port} (server name {verdict.server_name})"]
    if verdict.connects:
        state = "ok - the phone connects"
        if verdict.bitmask:
            state += " (not enforced: this firmware does not validate)"
    else:
        state = "FAIL - the phone does not connect"
    lines.append(f"verdict: {state}")
    if verdict.reason:
        lines.append(f"reason:  {verdict.reason}")
    if verbose:
        lines.append(f"openssl: {openssl_version()}")
        lines.append(
            f"profile: ciphers {p.cipher_string}; {p.tls_min_version}-{p.tls_max_version}"
            f"; tls_allow_wildcard_certs={p.wildcard_setting or 'n/a'}"
        )
    if verdict.tls_version:
        lines.append(f"TLS:     {verdict.tls_version} {verdict.cipher}")
    if verdict.chain:
        lines.append("chain (as the server sent it):")
        for i, cert in enumerate(verdict.chain):
            lines.append(f"  [{i}] subject  {cert.subject}")
            lines.append(f"      issuer   {cert.issuer}")
            lines.append(
                f"      valid    {cert.not_before:%Y-%m-%d %H:%M} .. "
                f"{cert.not_after:%Y-%m-%d %H:%M} UTC"
            )
            lines.append(f"      SANs     {', '.join(cert.sans) if cert.sans else '(none)'}")
            if verbose:
                lines.append(f"      digest   {cert.signature_hash}")
    if verdict.tls_version:
        names = " | ".join(verdict.flags) if verdict.flags else "(no flag)"
        lines.append(f"bitmask: {verdict.bitmask_hex}  {names}")
        for flag, info in verdict.explain():
            lines.append(f"  {flag.name} (0x{flag.value:08x}): {info.meaning}")
            lines.append(f"    cause: {info.cause}")
            lines.append(f"    fix:   {info.fix}")
    if verbose and verdict.name_check is not None:
        nc = verdict.name_check
        lines.append(
            f"name:    {'matched by ' + nc.matched_by if nc.matched_by else 'no match'}"
            f" among {', '.join(nc.identities) or '(no identity)'}"
        )
    if verbose and verdict.errors:
        lines.append("OpenSSL verification errors:")
        for e in verdict.errors:
            lines.append(
                f"  depth {e.depth}: X509_V_ERR_{e.name or '?'} ({e.code}): {e.message}"
                f" -> {e.flag.name}"
            )
    if verdict.crl is not None:
        lines.append("CRL check (beyond the phone: the firmware never checks revocation):")
        crl_flags = "|".join(flag_names(verdict.crl.flag))
        lines.append(f"  {crl_flags or 'not revoked'}: {verdict.crl.detail}")
    return "\n".join(lines)


def _explain(mask: int) -> list[str]:
    out: list[str] = []
    for flag in CertVerifyFlag:
        if mask & flag.value:
            info = FLAG_INFO[flag]
            out.append(f"  {flag.name} (0x{flag.value:08x}): {info.meaning}")
            out.append(f"    cause: {info.cause}")
            out.append(f"    fix:   {info.fix}")
    return out


def _tls_error(args: argparse.Namespace) -> int:
    decoded = decode_bitmask(args.mask)
    if args.json:
        print(
            json.dumps(
                {
                    "bitmask": decoded.value,
                    "bitmask_hex": f"0x{decoded.value:08x}",
                    "flags": [f.name for f in decoded.flags],
                    "unknown_bits": decoded.unknown_bits,
                    "note": decoded.note,
                    "meanings": {
                        f.name: {
                            "meaning": FLAG_INFO[f].meaning,
                            "cause": FLAG_INFO[f].cause,
                            "fix": FLAG_INFO[f].fix,
                        }
                        for f in decoded.flags
                        if f.name
                    },
                },
                indent=2,
            )
        )
        return 0
    if decoded.note:
        print(f"note: {decoded.note}")
    names = " | ".join(f.name or "" for f in decoded.flags) or "(no flag: no error)"
    print(f"0x{decoded.value:08x} = {names}")
    print("\n".join(_explain(decoded.value)))
    if decoded.unknown_bits:
        print(f"  0x{decoded.unknown_bits:08x}: bits pjlib does not define")
    return 0


def _tls_matrix(args: argparse.Namespace) -> int:
    golden = load_golden(args.golden)
    started = time.perf_counter()
    result = asyncio.run(run_matrix(golden))
    elapsed = time.perf_counter() - started
    mismatches = result.mismatches()
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not mismatches,
                    "openssl_version": openssl_version(),
                    "seconds": round(elapsed, 3),
                    "cells": [
                        {
                            "kind": k.value,
                            "class": c,
                            "observed": str(result.observed[(k, c)]),
                            "golden": str(result.golden[(k, c)])
                            if (k, c) in result.golden
                            else None,
                        }
                        for k in result.kinds
                        for c in result.class_ids
                    ],
                    "mismatches": len(mismatches),
                },
                indent=2,
            )
        )
        return 0 if not mismatches else 1
    print(f"phone-sim tls-matrix: firmware class x certificate kind ({openssl_version()})")
    print(
        "cells: ok = connects, FAIL = refuses, 'no TLS' = firmware without TLS; "
        "2_2_0_4 and 2_3_9 do not validate, so their mask is the one they would show"
    )
    print()
    print(result.render())
    print()
    cells = len(result.kinds) * len(result.class_ids)
    if mismatches:
        print(
            f"{len(mismatches)} of {cells} cells differ from the golden table "
            f"(shown as observed!=golden) in {elapsed:.1f} s",
            file=sys.stdout,
        )
        return 1
    print(f"all {cells} cells match the golden table ({elapsed:.1f} s)")
    return 0
