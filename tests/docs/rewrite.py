"""What the docs test changes in a block before running it (docs/writing-docs.md says it for
authors).

1. **The server.** ``pbx.example.com``, ``pbx:PORT``, ``10.0.0.5`` and ``192.0.2.10`` (the names
   and addresses the docs give "your server"), and ``127.0.0.1:5061``/``127.0.0.1:5060``
   (where a ``phone-sim lab`` started with its defaults listens), become the docs lab's
   loopback address (and so does the host of a configuration URL: ``sip:proxy@HOST``,
   ``https://HOST/``). The docs lab listens on the standard ports there (TLS 5061, TCP and
   UDP 5060) of an address of its own in 127.0.0.0/8, so one substitution covers every way a
   doc writes a server: ``HOST``, ``HOST:5061``, ``--transport udp`` with its default port,
   or ``SipHost(server=...)`` with its default port. A name given as the server name the
   phone checks (``--servername pbx.example.com``, ``server_name="..."``) stays: the lab's
   certificate carries it.
2. **Files.** ``myroot.pem``, ``private-root.pem``, ``ca.pem`` and ``/tmp/.../ca.pem`` become the
   lab's CA file; ``issuing-ca.crl`` a CRL from that CA.
3. **Shell commands that run until Ctrl-C** (``phone-sim lab`` without ``--duration``,
   ``phone-sim answer``, ``phone-sim register`` without ``--once``), when a block runs them in
   the foreground, are started, checked (they print their first line and keep running) and
   stopped with SIGINT, as Ctrl-C would; they must then exit 0. A ``phone-sim lab`` without
   port options gets free ports (``--tls-port 0 --tcp-port 0 --udp-port 0``).
4. ``phone-sim tls-check`` exits 1 when the phone would refuse the server: a verdict on the
   server, so 1 passes as well as 0 (2, a usage or network error, still fails).
5. ``phone-sim boot`` that discovers its server over mDNS (no ``--config-url``, no
   ``--server``) gets ``--server NAME``, the docs lab's DPMA instance: other labs (another
   test run's, a ``phone-sim lab --conf`` of the same block) may advertise on the loopback
   too, and a phone that hears several servers asks which.

Every rewrite keeps the block's line count, so a failure names the doc's own line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXAMPLE_HOSTS",
    "LabAddress",
    "LogicalLine",
    "logical_lines",
    "phone_sim_argv",
    "rewrite_hosts",
    "wrap_shell",
]

#: What docs call "your server".
EXAMPLE_HOSTS = ("pbx.example.com", "pbx", "10.0.0.5", "192.0.2.10")

#: The hosts as written: ``pbx`` only with a port (``pbx:5061``), since a bare ``pbx`` is as
#: likely a shell variable (``pbx=$!``, ``$pbx``); never after ``$`` or before ``=``.
_HOST = re.compile(
    r"(?<![\w.\-/@$])("
    + "|".join(re.escape(h) + (r"(?=:\d)" if "." not in h else "") for h in EXAMPLE_HOSTS)
    + r")(?![\w=-]|\.\w)"
)
#: A ``config_server_url`` names the server after ``sip:proxy@`` (``sip:proxy@pbx:5061``) or
#: ``://`` (``https://pbx.example.com:8089/``), where the general rule keeps a host after
#: ``@`` (the domain of an address of record) or ``/`` (a path).
_URL_HOST = re.compile(
    r"(?:(?<=sip:proxy@)|(?<=://))(" + "|".join(re.escape(h) for h in EXAMPLE_HOSTS)
    + r")(?=[:;/'\"\s]|$)"
)
_LAB_DEFAULT = re.compile(r"(?<![\d.])127\.0\.0\.1:(5061|5060)(?!\d)")
#: What precedes a *name* (checked against the certificate), not an address to reach.
_NAME_CONTEXT = re.compile(r"(--servername[ =]|server_name=[\"']?|--server-name[ =])$")
_CA = re.compile(r"(?<![\w/.\-])(?:myroot|private-root|ca)\.pem(?![\w.\-])|/tmp/[^\s'\"]*/ca\.pem")
_CRL = re.compile(r"(?<![\w/.\-])issuing-ca\.crl(?![\w.\-])")

#: The ways a doc names the command.
_PHONE_SIM = ("phone-sim", "./scripts/phone-sim", "scripts/phone-sim", ".venv/bin/phone-sim")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")


@dataclass(frozen=True, kw_only=True)
class LabAddress:
    """Where the docs lab is, as the rewrites need it."""

    host: str
    """Its loopback address (its own, in 127.0.0.0/8)."""
    ca_file: Path
    """The CA file phones load."""
    crl_file: Path
    """A CRL signed by that CA."""
    dpma_server: str | None = None
    """The instance name its DPMA emulator advertises over mDNS on 127.0.0.1, if it runs
    one."""


def rewrite_hosts(text: str, lab: LabAddress) -> str:
    """Rewrites 1 and 2 of the module docstring."""

    def host(match: re.Match[str]) -> str:
        if _NAME_CONTEXT.search(text[max(0, match.start() - 20):match.start()]):
            return match.group(0)
        return lab.host

    text = _LAB_DEFAULT.sub(lambda m: f"{lab.host}:{m.group(1)}", text)
    text = _HOST.sub(host, text)
    text = _URL_HOST.sub(lab.host, text)
    text = _CA.sub(str(lab.ca_file), text)
    return _CRL.sub(str(lab.crl_file), text)


@dataclass(frozen=True, kw_only=True)
class LogicalLine:
    """A shell command as written, joined across backslash continuations."""

    first: int
    """0-based index of its first physical line."""
    last: int
    """0-based index of its last physical line."""
    text: str
    """The joined command."""


def logical_lines(lines: list[str]) -> list[LogicalLine]:
    """The commands of a shell block outside here-documents."""
    out: list[LogicalLine] = []
    i = 0
    while i < len(lines):
        first = i
        parts = [lines[i]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            parts[-1] = parts[-1][:-1]
            i += 1
            parts.append(lines[i])
        text = " ".join(p.strip() for p in parts)
        out.append(LogicalLine(first=first, last=i, text=text))
        heredoc = _HEREDOC.search(text)
        i += 1
        if heredoc is not None:
            end = heredoc.group(2)
            while i < len(lines) and lines[i].strip() != end:
                i += 1
            i += 1
    return out


def phone_sim_argv(command: str) -> list[str] | None:
    """The arguments after ``phone-sim`` when ``command`` runs it (comments dropped), or
    None. ``sudo`` and ``VAR=value`` prefixes are skipped."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    while words and (words[0] == "sudo" or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
        words = words[1:]
    if not words or words[0] not in _PHONE_SIM:
        return None
    return words[1:]


def _is_long_running(argv: list[str]) -> bool:
    if not argv:
        return False
    command, options = argv[0], set(argv[1:])
    if command == "lab":
        return "--duration" not in options and "--help" not in options
    if command == "answer":
        return "--help" not in options
    if command == "register":
        return "--once" not in options and "--help" not in options
    return False


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd  # note`` -> (``cmd``, ``  # note``); quotes holding `` #`` are not looked into."""
    match = re.search(r"\s+#.*$", line)
    if match is None:
        return line, ""
    return line[: match.start()], line[match.start():]


def wrap_shell(text: str, *, dpma_server: str | None = None) -> str:
    """Rewrites 3, 4 and (given *dpma_server*) 5 of the module docstring, line for line."""
    lines = text.split("\n")
    for logical in logical_lines(lines):
        stripped = logical.text.strip()
        argv = phone_sim_argv(stripped)
        if argv is None or stripped.startswith(("if ", "while ", "!")):
            continue
        code, _ = _split_comment(stripped)
        if (dpma_server is not None and argv[0] == "boot"
                and not {"--config-url", "--server", "--help"} & {a.split("=")[0] for a in argv}):
            body, comment = _split_comment(lines[logical.last])
            lines[logical.last] = f"{body} --server {shlex.quote(dpma_server)}{comment}"
        if re.search(r"(^|[^&])&\s*$", code) or "|" in code.replace("||", ""):
            continue  # in the background or in a pipeline: the block manages it
        if _is_long_running(argv):
            prefix = "__docs_long "
            if argv[0] == "lab" and not {"--tls-port", "--tcp-port", "--udp-port"} & set(argv):
                body, comment = _split_comment(lines[logical.last])
                lines[logical.last] = f"{body} --tls-port 0 --tcp-port 0 --udp-port 0{comment}"
        elif argv[0] == "tls-check":
            prefix = "__docs_verdict "
        else:
            continue
        first = lines[logical.first]
        indent = first[: len(first) - len(first.lstrip())]
        if re.match(r"[A-Za-z_]\w*=", first.lstrip()):
            prefix += "env "  # VAR=value before the command: a function cannot take it
        lines[logical.first] = indent + prefix + first.lstrip()
    return "\n".join(lines)
