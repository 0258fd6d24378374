"""The fenced code blocks of a Markdown file, as the docs test sees them.

Every fence carries a language. ``sh`` (``bash``, ``shell``) and ``python`` blocks are run;
any other language (``text`` for output and synopses, ``yaml``, ``xml``...) is shown, not run.
A block that cannot run here says so in the paragraph just above it, where the reader sees it:
``Not run by the docs test: <the reason>.`` (see docs/writing-docs.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RUNNABLE",
    "SKIP_MARK",
    "Block",
    "MarkdownError",
    "doc_files",
    "parse_markdown",
]

#: Language -> how the docs test runs it.
RUNNABLE: dict[str, str] = {
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "python": "python",
    "py": "python",
}

#: The sentence that marks the next block as not run, followed by the reason.
SKIP_MARK = "Not run by the docs test"

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_SKIP = re.compile(re.escape(SKIP_MARK) + r"\s*(?::\s*(?P<reason>.*))?", re.S)


class MarkdownError(Exception):
    """A skip mark without a reason."""


@dataclass(frozen=True, kw_only=True)
class Block:
    """One fenced block."""

    path: Path
    """The Markdown file."""
    name: str
    """The file relative to the checkout (``docs/lab.md``), for messages."""
    line: int
    """1-based line of the opening fence."""
    lang: str
    """The fence's language (its info string's first word), lower case."""
    text: str
    """The block's content, ending with a newline."""
    skip_reason: str | None
    """Why it is not run, as the doc says (empty when the doc gives no reason, which is a
    problem reported with the file); None when it runs."""

    @property
    def where(self) -> str:
        """``docs/lab.md:42``: the opening fence."""
        return f"{self.name}:{self.line}"

    @property
    def kind(self) -> str | None:
        """``shell``, ``python``, or None for a block that is shown, not run."""
        return RUNNABLE.get(self.lang)

    def doc_line(self, block_line: int) -> int:
        """The file's line for the block's 1-based line ``block_line``."""
        return self.line + block_line


def doc_files(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    files += sorted((root / "docs").rglob("*.md"))
    return files


def parse_markdown(path: Path, root: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``path``, and the rules it breaks (file:line: what to do)."""
    name = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    prose_start = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, info = match.groups()
        opening = i
        lang = info.strip().split()[0].lower() if info.strip() else ""
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close.group(2)[0] == fence[0] and len(close.group(2)) >= len(fence) \
                    and not close.group(3).strip():
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        else:
            problems.append(f"{name}:{opening + 1}: this fence is never closed")
            break
        if not lang:
            problems.append(
                f"{name}:{opening + 1}: a fence without a language; say `sh` or `python` to "
                "have it run, or `text` (output, a synopsis) to show it only"
            )
        try:
            reason = _skip_reason(lines[prose_start:opening], f"{name}:{opening + 1}")
        except MarkdownError as exc:
            problems.append(str(exc))
            reason = ""
        blocks.append(Block(path=path, name=name, line=opening + 1, lang=lang,
                            text="\n".join(body) + "\n", skip_reason=reason))
        i += 1
        prose_start = i
    return blocks, problems


def _skip_reason(prose: list[str], where: str) -> str | None:
    """The reason given by the paragraph right above a fence, if it carries the mark."""
    end = len(prose)
    while end and not prose[end - 1].strip():
        end -= 1
    start = end
    while start and prose[start - 1].strip():
        start -= 1
    paragraph = " ".join(line.strip() for line in prose[start:end])
    match = _SKIP.search(paragraph)
    if match is None:
        return None
    # The reason is the sentence after the colon; the paragraph may go on.
    reason = re.split(r"(?<=[.!?])\s", (match.group("reason") or "").strip())[0]
    reason = reason.strip().strip("*_)").strip()
    if not re.search(r"[A-Za-z]{3}", reason):
        raise MarkdownError(
            f"{where}: '{SKIP_MARK}' needs a reason after a colon, such as "
            f"'{SKIP_MARK}: needs Docker.'"
        )
    return reason
