"""optuna-dashboard on a small run's journal, as a user opens it: `python -m service
dashboard <experiment> --port 0` in its own process, then headless Chromium (Debian's,
driven by Playwright as tests/reports/test_report_browser.py does): the study list shows
every cell, a study's history plot has a point per trial with a value, its intermediate
values plot has a curve per trial that reported one, and no console error, page error or
failed request. The study page's screenshot goes to .test-output/dashboard.png
(docs/screenshots/dashboard.png is one of them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from service.backends.journal import journal_path
from service.core.layout import parse_cell_name
from tests.reports.test_report_browser import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".test-output" / "dashboard.png"
START_S = 120.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium package)")


def small_run(tmp_path: Path) -> Path:
    """A replay of three searchers x two seeds on a generated table: an experiment folder."""
    from service.cli import main
    from service.core.table import load_table
    from tests.backends.replay.tables import emerald_table

    table = load_table(emerald_table(tmp_path / "emerald.parquet"))
    assert main(["run", "--backend", "replay", "--table", table.path, "--name", "small",
                 "--searchers", "random,asha,pbt", "--set", "searcher_options.pbt.population=6",
                 "--trials", "6", "--epochs", "6", "--seeds", "0,1",
                 "--storage", str(tmp_path / "results"), "--set", "replay.workers=1"]) == 0
    return tmp_path / "results" / "small"


def start_dashboard(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """The dashboard command in its own process; it and the URL it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (
        str(ROOT), os.environ.get("PYTHONPATH"))))}
    server = subprocess.Popen([sys.executable, "-m", "service", "dashboard", str(folder),
                               "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    lines = []
    deadline = time.time() + START_S
    while time.time() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if found and "optuna-dashboard on" in line:
            tunnel = server.stdout.readline()
            assert f"ssh -N -L {found[1]}:127.0.0.1:{found[1]} " in tunnel
            return server, found[0].rstrip("/")
    server.kill()
    raise AssertionError(f"the dashboard did not start: {''.join(lines)}")


def test_the_dashboard_shows_every_cell_and_its_plots(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    folder = small_run(tmp_path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(journal_path(folder))))
    studies = {s.study_name: s._study_id for s in storage.get_all_studies()}
    cells = sorted(d.name for d in folder.iterdir() if parse_cell_name(d.name))
    assert sorted(studies) == cells and len(cells) == 6
    shown = "asha__emerald__s0"  # pruned trials beside complete ones
    trials = storage.get_all_trials(studies[shown])
    valued = [t for t in trials if t.value is not None]
    curves = [t for t in trials if t.intermediate_values]
    problems: list[str] = []
    server, base = start_dashboard(folder)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                        if r.status >= 400 else None)
                page.goto(f"{base}/", wait_until="networkidle")
                for name in cells:
                    page.get_by_text(name, exact=False).first.wait_for(timeout=30_000)
                listed = page.inner_text("body")
                page.goto(f"{base}/dashboard/studies/{studies[shown]}",
                          wait_until="networkidle")
                history = page.locator("#plot-history .point")
                history.nth(len(valued) - 1).wait_for(state="attached", timeout=30_000)
                lines = page.locator("#graph-intermediate-values .trace")
                lines.nth(len(curves) - 1).wait_for(state="attached", timeout=30_000)
                points, traces = history.count(), lines.count()
                attrs = page.inner_text("body")
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert problems == []
    assert all(name in listed for name in cells)
    assert points == len(valued) and traces == len(curves) >= 2
    assert "val_acc" in attrs and "searcher" in attrs and "asha" in attrs
    print(f"screenshot: {SCREENSHOT}")
