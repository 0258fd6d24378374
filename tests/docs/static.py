"""What the docs test checks in blocks it does not run.

- A skipped shell block: every ``phone-sim`` command in it parses (the real parser, nothing
  runs), and every script of the checkout it runs (``sudo ./scripts/test``) exists, is
  executable and parses (``sh -n``/``bash -n``).
- A skipped Python block: its imports import.
- A ``text`` block that is a synopsis (lines starting ``phone-sim COMMAND``): every ``--option``
  it names exists in that command's parser.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

from phone_sim.cli import build_parser
from tests.docs.markdown import Block
from tests.docs.rewrite import logical_lines, phone_sim_argv

__all__ = ["check_not_run", "check_synopsis", "has_synopsis"]

_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_SYNOPSIS = re.compile(r"^\s*phone-sim ([a-z][a-z-]*)(?=\s|$)")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("phone-sim has no sub-commands")


def _parse(argv: list[str]) -> str | None:
    """None when ``phone-sim ARGV`` parses, else argparse's message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue().strip().splitlines()[-1]
    return None


def _check_script(block: Block, root: Path, word: str) -> str | None:
    path = root / word
    if not path.is_file():
        return f"{word} does not exist"
    if not path.stat().st_mode & 0o111:
        return f"{word} is not executable"
    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    shell = "bash" if "bash" in first else "sh" if first.startswith("#!") and "sh" in first \
        else None
    if shell is not None:
        result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            return f"{word} does not parse: {result.stderr.strip()}"
    return None


def check_not_run(block: Block, root: Path) -> list[str]:
    """Problems in a block marked as not run (empty: none)."""
    problems: list[str] = []
    if block.kind == "shell":
        lines = block.text.split("\n")
        for logical in logical_lines(lines):
            where = f"{block.name}:{block.doc_line(logical.first + 1)}"
            argv = phone_sim_argv(logical.text)
            if argv is not None:
                message = _parse(argv)
                if message is not None:
                    problems.append(f"{where}: phone-sim {' '.join(argv)}: {message}")
                continue
            try:
                words = shlex.split(logical.text, comments=True)
            except ValueError:
                continue
            while words and words[0] == "sudo":
                words = words[1:]
            if words and words[0].startswith(("./", "scripts/")):
                message = _check_script(block, root, words[0].removeprefix("./"))
                if message is not None:
                    problems.append(f"{where}: {message}")
    elif block.kind == "python":
        try:
            tree = ast.parse(block.text)
        except SyntaxError:
            tree = ast.Module(body=[], type_ignores=[])
            for line in block.text.splitlines():
                with contextlib.suppress(SyntaxError):
                    tree.body.extend(ast.parse(line).body)
        imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        if imports:
            code = ast.unparse(ast.Module(body=list(imports), type_ignores=[]))
            result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, cwd=root, check=False)
            if result.returncode != 0:
                last = result.stderr.strip().splitlines()[-1:] or ["?"]
                problems.append(f"{block.where}: its imports fail: {last[0]}")
    return problems


def has_synopsis(block: Block) -> bool:
    """Whether a block not run has a line starting ``phone-sim COMMAND``."""
    return block.kind is None and any(_SYNOPSIS.match(line) for line in block.text.split("\n"))


def check_synopsis(block: Block) -> list[str]:
    """Problems in a ``text`` block's ``phone-sim`` synopses (empty: none, or no synopsis)."""
    problems: list[str] = []
    commands = _subparsers()
    lines = block.text.split("\n")
    i = 0
    while i < len(lines):
        match = _SYNOPSIS.match(lines[i])
        if match is None:
            i += 1
            continue
        where = f"{block.name}:{block.doc_line(i + 1)}"
        text = lines[i]
        i += 1
        while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
            text += " " + lines[i]
            i += 1
        name = match.group(1)
        parser = commands.get(name)
        if parser is None:
            problems.append(f"{where}: phone-sim has no command {name!r}")
            continue
        known = {s for action in parser._actions for s in action.option_strings}
        for option in _OPTION.findall(text):
            if option not in known:
                problems.append(f"{where}: phone-sim {name} has no option {option}")
    return problems
