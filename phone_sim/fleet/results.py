"""Reading ``results.jsonl`` back: every complete line, even from a run that was killed.

A run killed with SIGKILL can leave its last line cut short (the writer flushes whole
buffers, not whole lines); that line is skipped and said so. A broken line anywhere else
means the file is not a fleet results file, and the error says which line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phone_sim.errors import UsageError

__all__ = ["Results", "ResultsError", "read_results"]


class ResultsError(UsageError):
    """The file is not fleet results."""


@dataclass(slots=True, kw_only=True)
class Results:
    """The records of a run."""

    records: list[dict[str, Any]] = field(default_factory=list)
    """Every complete record, in file order."""
    truncated: bool = False
    """True when the last line was cut short (the run was killed)."""

    @property
    def complete(self) -> bool:
        """Whether the run reached its end record."""
        return any(r.get("ev") == "end" for r in self.records)


def read_results(path: Path) -> Results:
    """Read a results file; :class:`ResultsError` naming the line when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    results = Results()
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number - 1 == last:  # no newline yet: the writer was stopped mid-line
                results.truncated = True
                break
            raise ResultsError(
                f"{path}: line {number} is not a JSON record: not a phone-sim fleet results "
                "file (give the .jsonl the fleet wrote)"
            ) from None
        if not isinstance(record, dict) or "ev" not in record:
            raise ResultsError(f"{path}: line {number} is not a fleet record (no 'ev')")
        results.records.append(record)
    if not results.records:
        raise ResultsError(f"{path}: no records: the run wrote nothing yet")
    return results
