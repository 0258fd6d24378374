"""Asterisk's configuration file syntax, read as ``main/config.c`` reads it.

- ``[section]`` starts a section; ``[name](opts)`` takes a comma-separated list: ``!`` makes
  it a template (never a real section), ``+`` adds to the section of that name defined
  earlier, any other name inherits from that earlier section or template (its options are
  copied first, the section's own follow);
- ``name = value`` and ``name => value`` (the object form) are options; names match without
  regard to case; ``name += more`` appends to the last value of *name*; a leading ``\\``
  escapes the first character;
- ``;`` starts a comment (``\\;`` is a literal semicolon); ``;--`` ... ``--;`` is a block
  comment, nestable, across lines;
- ``#include file`` (``"file"`` or ``<file>``; globs allowed) reads another file at that
  point, **relative to the including file's directory**; ``#tryinclude`` does the same but
  a missing file is not an error; ``#exec`` is refused: phone-sim never runs a program named
  by a configuration file.

Which value counts when an option is repeated is the module's business. Modules that walk
a section's options in order (as most do) see the last value win, so :meth:`ConfSection.get`
returns the last one, inherited values coming before the section's own; options that may
repeat (a phone's ``line=``) are read with :meth:`ConfSection.get_all`.

Errors are :class:`ConfError`, naming the file, the line and the option. Reading is sans-I/O
apart from the include loader, which :func:`read_asterisk_conf` supplies (and a test can
replace).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phone_sim.errors import UsageError

__all__ = [
    "MAX_INCLUDE_DEPTH",
    "AsteriskConf",
    "ConfError",
    "ConfOption",
    "ConfSection",
    "parse_asterisk_conf",
    "read_asterisk_conf",
]

#: Asterisk's MAX_INCLUDE_LEVEL: includes nested deeper than this are an error (a loop).
MAX_INCLUDE_DEPTH = 10
#: The longest line accepted (Asterisk's read buffer is 8192 bytes).
MAX_LINE = 8192
#: The largest file accepted.
MAX_FILE_BYTES = 4 * 1024 * 1024

#: ``(including file, include argument, tolerate missing) -> [(file name, text), ...]``.
IncludeLoader = Callable[[str, str, bool], list[tuple[str, str]]]


class ConfError(UsageError):
    """A configuration file that cannot be read as Asterisk would: names the file, the line
    and, where there is one, the option."""

    def __init__(self, message: str, *, file: str, line: int | None = None,
                 option: str | None = None) -> None:
        where = file if line is None else f"{file}:{line}"
        what = f" option {option!r}:" if option else ""
        super().__init__(f"{where}:{what} {message}")
        self.file = file
        self.line = line
        self.option = option


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfOption:
    """One ``name = value`` line."""

    name: str
    """The option name, as written."""
    value: str
    """The value, stripped."""
    file: str
    """The file it was read from."""
    line: int
    """Its line number."""
    inherited: bool = False
    """Copied from a template or an earlier section."""

    def error(self, message: str) -> ConfError:
        """A :class:`ConfError` pointing at this option."""
        return ConfError(message, file=self.file, line=self.line, option=self.name)


@dataclass(slots=True, kw_only=True)
class ConfSection:
    """One ``[section]`` with its options, inherited ones first."""

    name: str
    """The section name."""
    file: str
    """Where it was defined."""
    line: int
    """Its line number."""
    template: bool = False
    """Declared with ``(!)``: a template, not a section of its own."""
    templates: tuple[str, ...] = ()
    """The sections and templates it inherits from, in order."""
    options: list[ConfOption] = field(default_factory=list)
    """Every option, in order."""

    def get(self, name: str) -> ConfOption | None:
        """The last option called *name* (case-insensitive), or None."""
        key = name.lower()
        for option in reversed(self.options):
            if option.name.lower() == key:
                return option
        return None

    def value(self, name: str, default: str | None = None) -> str | None:
        """The value of :meth:`get`, or *default*; an empty value counts as absent."""
        option = self.get(name)
        if option is None or option.value == "":
            return default
        return option.value

    def get_all(self, name: str) -> list[ConfOption]:
        """Every option called *name*, in order (a repeatable option such as ``line``)."""
        key = name.lower()
        return [o for o in self.options if o.name.lower() == key]

    def error(self, message: str) -> ConfError:
        """A :class:`ConfError` pointing at the section header."""
        return ConfError(f"[{self.name}]: {message}", file=self.file, line=self.line)


@dataclass(frozen=True, kw_only=True)
class AsteriskConf:
    """A parsed configuration: its sections in order (templates included)."""

    file: str
    """The top-level file."""
    all_sections: tuple[ConfSection, ...]
    """Every section, templates included, in order."""

    @property
    def sections(self) -> tuple[ConfSection, ...]:
        """The real sections (not templates), in order."""
        return tuple(s for s in self.all_sections if not s.template)

    def named(self, name: str) -> list[ConfSection]:
        """The real sections called *name* (case-insensitive); pjsip.conf reuses names for
        sections of different types."""
        key = name.lower()
        return [s for s in self.sections if s.name.lower() == key]


class _Parser:
    def __init__(self, loader: IncludeLoader) -> None:
        self.loader = loader
        self.sections: list[ConfSection] = []

    def parse(self, file: str, text: str, depth: int, current: ConfSection | None) -> None:
        # Each file keeps its own current section (config.c's local ``cat``): an included
        # file starts in the includer's section, and the includer goes on in its own after.
        comment_depth = 0
        comment_start = 0
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if len(raw) > MAX_LINE:
                raise ConfError(f"line longer than {MAX_LINE} characters", file=file,
                                line=lineno)
            line, comment_depth, opened = _strip_comments(raw, comment_depth)
            if opened:
                comment_start = lineno
            line = line.strip()
            if line:
                current = self._line(file, lineno, line, depth, current)
        if comment_depth:
            raise ConfError("block comment ';--' is never closed with '--;'", file=file,
                            line=comment_start)

    def _line(
        self, file: str, lineno: int, line: str, depth: int, current: ConfSection | None
    ) -> ConfSection | None:
        if line.startswith("["):
            return self._header(file, lineno, line)
        if line.startswith("#"):
            self._directive(file, lineno, line, depth, current)
        else:
            self._option(file, lineno, line, current)
        return current

    def _find(self, name: str) -> ConfSection | None:
        key = name.lower()
        for section in self.sections:
            if section.name.lower() == key:
                return section
        return None

    def _header(self, file: str, lineno: int, line: str) -> ConfSection:
        end = line.find("]")
        if end < 0:
            raise ConfError("no closing ']' in the section header", file=file, line=lineno)
        name = line[1:end]
        if not name.strip():
            raise ConfError("empty section name", file=file, line=lineno)
        rest = line[end + 1 :].strip()
        opts: list[str] = []
        if rest:
            if not rest.startswith("(") or not rest.endswith(")"):
                raise ConfError(f"unexpected {rest!r} after [{name}]: expected (options)",
                                file=file, line=lineno)
            opts = [o.strip() for o in rest[1:-1].split(",")]
        section = ConfSection(name=name, file=file, line=lineno)
        target = section
        for opt in opts:
            if opt == "!":
                section.template = True
            elif opt.startswith("+"):
                existing = self._find(name)
                if existing is None:
                    raise ConfError(f"[{name}](+) adds to a section that is not defined "
                                    "before it", file=file, line=lineno)
                existing.template |= section.template
                target = existing
            elif opt:
                base = self._find(opt)
                if base is None:
                    raise ConfError(f"[{name}] inherits from {opt!r}, which is not defined "
                                    "before it", file=file, line=lineno)
                section.templates += (base.name,)
                section.options.extend(
                    ConfOption(name=o.name, value=o.value, file=o.file, line=o.line,
                               inherited=True)
                    for o in base.options
                )
            else:
                raise ConfError(f"empty entry in [{name}]({rest[1:-1]})", file=file,
                                line=lineno)
        if target is section:
            self.sections.append(section)
        return target

    def _directive(
        self, file: str, lineno: int, line: str, depth: int, current: ConfSection | None
    ) -> None:
        word, _, argument = line[1:].partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            argument = f"{more} {argument}"
        word = word.lower()
        argument = argument.strip()
        if word == "exec":
            raise ConfError(f"#exec {argument} is refused: phone-sim never runs programs named "
                            "by a configuration file", file=file, line=lineno)
        if word not in ("include", "tryinclude"):
            raise ConfError(f"unknown directive #{word}", file=file, line=lineno)
        if not argument:
            raise ConfError(f"#{word} needs a file name", file=file, line=lineno)
        if len(argument) > 1 and (argument[0], argument[-1]) in (('"', '"'), ("<", ">")):
            argument = argument[1:-1]
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfError(f"#{word} {argument}: includes nested more than "
                            f"{MAX_INCLUDE_DEPTH} deep (an include loop?)", file=file,
                            line=lineno)
        try:
            files = self.loader(file, argument, word == "tryinclude")
        except ConfError:
            raise
        except UsageError as exc:
            raise ConfError(f"#{word} {argument}: {exc}", file=file, line=lineno) from None
        for name, text in files:
            self.parse(name, text, depth + 1, current)

    def _option(self, file: str, lineno: int, line: str, current: ConfSection | None) -> None:
        if current is None:
            raise ConfError(f"{line[:40]!r} is outside any [section]", file=file, line=lineno)
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
            if not line or ord(line[0]) < 33:
                raise ConfError("invalid escape", file=file, line=lineno)
        eq = line.find("=", 1 if escaped else 0)
        if eq < 0:
            raise ConfError(f"no '=' in {line[:40]!r}", file=file, line=lineno)
        if eq > 0 and line[eq - 1] == "+":
            name = line[: eq - 1].strip()
            value = line[eq + 1 :].strip()
            previous = current.get(name) if name else None
            if previous is not None:
                index = max(i for i, o in enumerate(current.options) if o is previous)
                current.options[index] = ConfOption(
                    name=previous.name, value=(previous.value + value).strip(), file=file,
                    line=lineno)
                return
        else:
            name = line[:eq].strip()
            value = line[eq + 1 :]
            if value.startswith(">"):
                value = value[1:]
            value = value.strip()
        if not name:
            raise ConfError("no option name before '='", file=file, line=lineno)
        current.options.append(ConfOption(name=name, value=value, file=file, line=lineno))


def _strip_comments(raw: str, depth: int) -> tuple[str, int, bool]:
    """The line without comments, the block-comment depth after it, and whether a block
    comment opened on it."""
    out: list[str] = []
    opened = False
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == ";":
            if i > 0 and raw[i - 1] == "\\":
                if depth == 0:
                    out[-1] = ";"  # '\;' is a literal semicolon
                i += 1
                continue
            if raw.startswith(";--", i) and not raw.startswith(";---", i):
                depth += 1
                opened = True
                i += 3
                continue
            if i >= 2 and raw[i - 2 : i] == "--" and depth:
                depth -= 1  # the '--' before it was inside the comment, never kept
                i += 1
                continue
            if depth == 0:
                break  # a line comment: the rest of the line
            i += 1
            continue
        if depth == 0:
            out.append(c)
        i += 1
    return "".join(out), depth, opened


def parse_asterisk_conf(
    text: str, *, file: str = "<string>", loader: IncludeLoader | None = None
) -> AsteriskConf:
    """Parse *text* (the contents of *file*). ``#include`` goes through *loader*; without
    one an include is an error."""

    def no_includes(_from: str, target: str, _optional: bool) -> list[tuple[str, str]]:
        raise UsageError(f"cannot include {target!r} here: no include loader")

    parser = _Parser(loader or no_includes)
    parser.parse(file, text, 0, None)
    return AsteriskConf(file=file, all_sections=tuple(parser.sections))


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UsageError(f"{path} is {size} bytes: more than the {MAX_FILE_BYTES} accepted")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def file_loader(including: str, target: str, optional: bool) -> list[tuple[str, str]]:
    """The include loader of :func:`read_asterisk_conf`: *target* relative to the directory
    of *including*, globs expanded in sorted order."""
    base = Path(including).parent
    pattern = os.path.join(base, target) if not os.path.isabs(target) else target
    if glob.has_magic(pattern):
        matches = sorted(glob.glob(pattern))
    else:
        matches = [pattern] if os.path.exists(pattern) else []
    if not matches:
        if optional:
            return []
        raise UsageError(f"{pattern} does not exist")
    return [(m, _read(Path(m))) for m in matches]


def read_asterisk_conf(path: str | os.PathLike[str]) -> AsteriskConf:
    """Read and parse the file at *path*, following its includes."""
    name = os.fspath(path)
    try:
        text = _read(Path(name))
    except UsageError as exc:
        raise ConfError(str(exc), file=name) from None
    return parse_asterisk_conf(text, file=name, loader=file_loader)
