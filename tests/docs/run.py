"""Running one block: a shell block through bash, a Python block through this interpreter, each
in a subprocess with a timeout, in a scratch directory that looks like the checkout.

The scratch directory links every entry of the checkout (``fixtures``, ``scripts``, ``docs``,
``.venv``...), so a block reads files by the paths the docs give, and what it writes (a key
log, a recording) lands there and goes away with it. ``phone-sim``, ``python`` and ``pytest``
are those of the interpreter running the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.docs.markdown import Block
from tests.docs.rewrite import LabAddress, rewrite_hosts, wrap_shell

__all__ = ["PREAMBLE", "Outcome", "make_scratch", "run_block"]

PREAMBLE = (Path(__file__).parent / "preamble.bash").read_text(encoding="utf-8")
_PREAMBLE_LINES = PREAMBLE.count("\n")
_MARKER = re.compile(r"^__DOCS_FAILED__ script-line=(\d+) status=(\d+)\n?", re.M)
#: How long a long-running command may take to print its first line.
READY_TIMEOUT = 30


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a block ran."""

    block: Block
    """The block."""
    status: int | None
    """The exit status; None when it was killed at the timeout."""
    output: str
    """stdout and stderr, interleaved."""
    failed_at: int | None
    """The file's line of the command or statement that failed, when known."""
    timeout: float
    """The time it had."""

    @property
    def ok(self) -> bool:
        """Whether it ran to the end and exited 0."""
        return self.status == 0

    def report(self) -> str:
        """What a failure shows: the file, the line and the output."""
        block = self.block
        how = (f"was stopped after {self.timeout:g} s" if self.status is None
               else f"failed (exit {self.status})")
        lines = [f"{block.where}: {block.lang} block {how}"]
        if self.failed_at is not None:
            source = block.path.read_text(encoding="utf-8").splitlines()
            text = source[self.failed_at - 1].strip() if self.failed_at <= len(source) else ""
            lines.append(f"{block.name}:{self.failed_at}: {text}")
        lines.append("--- output ---")
        lines.append(self.output.rstrip() or "(none)")
        return "\n".join(lines)


def make_scratch(root: Path, directory: Path) -> Path:
    """``directory``, created, with a link to every entry of the checkout ``root``."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name not in (".git",) and not (directory / entry.name).exists():
            (directory / entry.name).symlink_to(entry)
    return directory


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["TMPDIR"] = str(workdir)
    env["DOCS_READY_TIMEOUT"] = str(READY_TIMEOUT)
    env.pop("PYTHONPATH", None)
    return env


def _run(argv: list[str], workdir: Path, timeout: float) -> tuple[int | None, str]:
    """Run in a new session, output to a file (a background child that keeps a pipe open
    must not hold us), and kill whatever the block left running."""
    log = workdir / ".docs-output"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, env=_env(workdir), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            status: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, log.read_text(encoding="utf-8", errors="replace")


def run_block(block: Block, *, workdir: Path, lab: LabAddress, timeout: float) -> Outcome:
    """Run ``block`` (rewritten for ``lab``) in ``workdir``, a scratch directory."""
    text = rewrite_hosts(block.text, lab)
    if block.kind == "shell":
        script = workdir / "block.bash"
        script.write_text(PREAMBLE + wrap_shell(text, dpma_server=lab.dpma_server),
                          encoding="utf-8")
        status, output = _run(["bash", str(script)], workdir, timeout)
        failed_at = None
        marker = _MARKER.search(output)
        if marker is not None and status != 0:
            script_line = int(marker.group(1)) - _PREAMBLE_LINES
            if 1 <= script_line <= block.text.count("\n"):
                failed_at = block.doc_line(script_line)
        output = _MARKER.sub("", output)
        return Outcome(block=block, status=status, output=output, failed_at=failed_at,
                       timeout=timeout)
    if block.kind == "python":
        program = workdir / f"{Path(block.name).stem}_line{block.line}.py"
        program.write_text(text, encoding="utf-8")
        status, output = _run([sys.executable, str(program)], workdir, timeout)
        failed_at = None
        frames = re.findall(rf'File "[^"]*{re.escape(program.name)}", line (\d+)', output)
        if frames and status != 0:
            failed_at = block.doc_line(int(frames[-1]))
        return Outcome(block=block, status=status, output=output, failed_at=failed_at,
                       timeout=timeout)
    raise ValueError(f"{block.where}: a {block.lang} block is not run")
