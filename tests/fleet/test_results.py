"""Reading results back, including a run killed mid-line."""

from __future__ import annotations

from pathlib import Path

import pytest

from phone_sim.fleet.results import ResultsError, read_results


def test_truncated_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"t":0,"ev":"run"}\n{"t":1,"ev":"reg","ok":true,"latency":0.1}\n{"t":1.2,"e')
    results = read_results(path)
    assert results.truncated and not results.complete
    assert [r["ev"] for r in results.records] == ["run", "reg"]


def test_not_results(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"t":0,"ev":"run"}\nhello\n{"t":1,"ev":"end"}\n')
    with pytest.raises(ResultsError, match="line 2 is not a JSON record"):
        read_results(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ResultsError, match="line 1 is not a fleet record"):
        read_results(path)
    path.write_text("")
    with pytest.raises(ResultsError, match="no records"):
        read_results(path)
    with pytest.raises(ResultsError, match="cannot read"):
        read_results(tmp_path / "missing.jsonl")
