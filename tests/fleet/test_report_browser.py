"""The HTML report in headless Chromium (Debian's, driven by playwright; no browser download,
no network): every plot rendered and the console logged no error."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from phone_sim.fleet.report import PLOT_IDS
from tests.fleet.conftest import PHONE_SIM, SCENARIOS, LabInfo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(120)


def open_report(path: Path, screenshot: Path | None = None) -> tuple[dict[str, int], list[str],
                                                                      list[str]]:
    """Open *path*; the SVG layers per plot, console errors, and non-file requests."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    errors: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1200, "height": 900})
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= "
                f"{len(PLOT_IDS)}", timeout=30_000)
            layers = page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".map(e => [e.id, e.querySelectorAll('.main-svg').length]))")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    return layers, errors, [u for u in requests if not u.startswith("file:")]


def test_report_renders_every_plot_offline(lab: LabInfo, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    report = tmp_path / "report.html"
    done = subprocess.run(
        [*PHONE_SIM, "fleet", str(SCENARIOS / "lab-calls.yaml"), "-o", str(results),
         "--report", str(report), "--no-live"],
        env=lab.env(PHONES="30", CALLS="8"), capture_output=True, text=True, timeout=90,
        check=False)
    assert done.returncode == 0, done.stderr
    assert f"report: {report}" in done.stdout
    assert report.read_text().count("Plotly.newPlot(") == len(PLOT_IDS)
    layers, errors, requests = open_report(report, tmp_path / "report.png")
    assert set(layers) == set(PLOT_IDS)
    assert all(n >= 2 for n in layers.values()), layers
    assert errors == []
    assert requests == []


def test_report_of_no_results_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("not json\n{}\n")
    done = subprocess.run([*PHONE_SIM, "report", str(path), "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "line 1 is not a JSON record" in done.stderr
