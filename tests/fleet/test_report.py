"""The report's plots, without a browser (tests/fleet/test_report_browser.py opens them)."""

from __future__ import annotations

import pytest

from phone_sim.fleet.report import _histogram


def test_one_value_is_a_narrow_bar_with_the_value_in_words() -> None:
    # No loss on any of 40 legs: plotly's own binning would stretch one bar over the plot.
    fig = _histogram([0.0] * 40, "Packet loss", "percent", "legs", "#d62728")
    (trace,) = fig.data
    assert trace.xbins.size == pytest.approx(0.01)
    assert fig.layout.xaxis.range == pytest.approx((-0.25, 0.25))
    assert [a.text for a in fig.layout.annotations] == ["all 40: 0"]
    mos = _histogram([4.409] * 3, "MOS", "MOS", "legs", "#8c564b")
    assert mos.layout.xaxis.range[0] < 4.409 < mos.layout.xaxis.range[1]
    assert [a.text for a in mos.layout.annotations] == ["all 3: 4.409"]


def test_spread_values_get_plotly_bins_and_no_values_say_so() -> None:
    fig = _histogram([0.1, 0.2, 0.4], "Set-up", "seconds", "calls", "#2ca02c")
    (trace,) = fig.data
    assert trace.nbinsx == 40 and trace.xbins.size is None
    assert not fig.layout.annotations
    empty = _histogram([], "Set-up", "seconds", "calls", "#2ca02c")
    assert not empty.data
    assert [a.text for a in empty.layout.annotations] == ["no calls in this run"]
