"""The report page in a real headless browser (Debian's Chromium, driven by Playwright): it
loads from a local HTTP server with no console error, no failed request and every plot
decoded, and a full-page screenshot is kept in .test-output/ for a person to look at."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.reports import write_report
from tests.reports.test_report_storage import build_storage

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".test-output" / "report-browser.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    # As root in a container, with no network beyond loopback: no sandbox, no GPU, and none
    # of the background connections a closed network refuses.
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium package)")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A static HTTP server on loopback for `folder`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_report_page_loads_and_its_plots_render(tmp_path: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    written = write_report(build_storage(tmp_path))
    index = written["index"]
    pngs = sorted(p.name for p in written.values() if p.suffix == ".png")
    assert pngs, "the report has plots to render"
    problems: list[str] = []
    with serve(index.parent) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                    if r.status >= 400 else None)
            page.goto(f"{base}/{index.name}", wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, "
                "e.naturalWidth, e.naturalHeight])")
            title = page.title()
            tables = page.locator("table").count()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert title.startswith("Report: ") and tables >= 3
    assert sorted(src for src, *_ in images) == pngs
    assert all(done and w > 100 and h > 100 for _, done, w, h in images), images
    shot = Image.open(SCREENSHOT).convert("L")
    inked = sum(count for value, count in enumerate(shot.histogram()) if value < 200)
    assert shot.height > 900 and inked / (shot.width * shot.height) > 0.01
    print(f"screenshot: {SCREENSHOT}")
