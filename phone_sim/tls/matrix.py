"""The firmware class x certificate kind matrix, sans I/O: the golden table and the comparison.

The golden table (``fixtures/tls/golden.txt``) is written by hand; this module only reads it and
compares what the running code observed with it. :mod:`phone_sim.tls.aio_matrix` runs the
handshakes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from phone_sim.errors import UsageError
from phone_sim.firmware import FIRMWARE_CLASSES
from phone_sim.tls.pki import CertKind

__all__ = [
    "DEFAULT_GOLDEN_PATH",
    "Cell",
    "GoldenTableError",
    "MatrixResult",
    "load_golden",
    "parse_golden",
]

#: Where the hand-written table lives in a checkout.
DEFAULT_GOLDEN_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "tls" / "golden.txt"


class GoldenTableError(UsageError):
    """The golden table is missing or malformed."""


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One cell: whether the phone connects and the mask (None when no TLS at all)."""

    connects: bool
    """Whether the phone goes on with the connection."""
    bitmask: int | None
    """The pjlib mask, None when no handshake is attempted (no TLS)."""

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse ``ok:0x22``, ``fail:0x40000000`` or ``fail:none``."""
        verdict, sep, mask = text.partition(":")
        if not sep or verdict not in ("ok", "fail"):
            raise GoldenTableError(f"bad golden cell {text!r}: expected ok:<hex> or fail:<hex>")
        if mask == "none":
            return cls(connects=verdict == "ok", bitmask=None)
        try:
            value = int(mask, 16)
        except ValueError:
            raise GoldenTableError(f"bad golden cell {text!r}: {mask!r} is not hex") from None
        return cls(connects=verdict == "ok", bitmask=value)

    def __str__(self) -> str:
        mask = "none" if self.bitmask is None else f"0x{self.bitmask:x}"
        return f"{'ok' if self.connects else 'fail'}:{mask}"


Golden = dict[tuple[CertKind, str], Cell]


def parse_golden(text: str) -> Golden:
    """Parse the golden table: a header line ``kind <class ids...>`` then one row per kind."""
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not rows or rows[0][0] != "kind":
        raise GoldenTableError("golden table has no 'kind <classes...>' header line")
    classes = rows[0][1:]
    known_classes = {c.id for c in FIRMWARE_CLASSES}
    for cid in classes:
        if cid not in known_classes:
            raise GoldenTableError(f"golden table names unknown firmware class {cid!r}")
    table: Golden = {}
    for row in rows[1:]:
        try:
            kind = CertKind(row[0])
        except ValueError:
            raise GoldenTableError(
                f"golden table names unknown certificate kind {row[0]!r}"
            ) from None
        if len(row) != len(classes) + 1:
            raise GoldenTableError(
                f"golden row {row[0]!r} has {len(row) - 1} cells, not {len(classes)}"
            )
        for cid, cell in zip(classes, row[1:], strict=True):
            table[(kind, cid)] = Cell.parse(cell)
    return table


def load_golden(path: str | os.PathLike[str] | None = None) -> Golden:
    """Read and parse the golden table (default: the checkout's ``fixtures/tls/golden.txt``)."""
    target = Path(path) if path is not None else DEFAULT_GOLDEN_PATH
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenTableError(
            f"cannot read the golden table {target}: {exc.strerror} "
            "(run from a checkout, or pass --golden FILE)"
        ) from None
    return parse_golden(text)


@dataclass(frozen=True, kw_only=True)
class MatrixResult:
    """Observed cells next to the golden ones."""

    kinds: tuple[CertKind, ...]
    """Rows, in order."""
    class_ids: tuple[str, ...]
    """Columns, in order."""
    observed: Mapping[tuple[CertKind, str], Cell]
    """What the running code did."""
    golden: Mapping[tuple[CertKind, str], Cell]
    """What the hand-written table says."""

    def mismatches(self) -> list[tuple[CertKind, str, Cell, Cell | None]]:
        """Every (kind, class, observed, expected) that differs, or has no golden cell."""
        out: list[tuple[CertKind, str, Cell, Cell | None]] = []
        for kind in self.kinds:
            for cid in self.class_ids:
                seen = self.observed[(kind, cid)]
                want = self.golden.get((kind, cid))
                if want != seen:
                    out.append((kind, cid, seen, want))
        return out

    @property
    def ok(self) -> bool:
        """True when every cell matches the golden table."""
        return not self.mismatches()

    def render(self) -> str:
        """A readable table; a mismatching cell reads ``observed!=expected``."""
        header = ["certificate \\ firmware", *self.class_ids]
        lines: list[Sequence[str]] = [header]
        for kind in self.kinds:
            row = [kind.value]
            for cid in self.class_ids:
                seen = self.observed[(kind, cid)]
                want = self.golden.get((kind, cid))
                text = _short(seen)
                if want != seen:
                    text += f"!={_short(want) if want else '?'}"
                row.append(text)
            lines.append(row)
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        out = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
        ]
        return "\n".join(out)


def _short(cell: Cell) -> str:
    if cell.bitmask is None:
        return "no TLS"
    mask = f"0x{cell.bitmask:x}"
    return f"ok {mask}" if cell.connects else f"FAIL {mask}"
