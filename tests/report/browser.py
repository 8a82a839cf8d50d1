"""Open a report in headless Chromium and read back what its images did."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--virtual-time-budget=15000", "--dump-dom"]
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute("src"), i.complete, i.naturalWidth, i.naturalHeight];
  });
  var out = document.createElement("pre");
  out.id = "capscale-probe";
  out.textContent = JSON.stringify(imgs);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (apt-get install chromium); .ci/run installs it")


def image_states(index: Path) -> list[list]:
    """[src, complete, naturalWidth, naturalHeight] for every <img> of the page, as Chromium
    loaded it from disk. The page is copied beside itself with a probe script appended, so
    relative links resolve exactly as they do for the page."""
    browser = chromium()
    text = index.read_text(encoding="utf-8")
    probe_page = index.with_name("_probe_" + index.name)
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                                   probe_page.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=120)
    finally:
        probe_page.unlink()
    dom = done.stdout
    start = dom.find('id="capscale-probe">')
    if start < 0:
        raise AssertionError(f"the probe did not run; chromium said: {done.stderr[-2000:]}")
    start += len('id="capscale-probe">')
    return json.loads(unescape(dom[start:dom.index("</pre>", start)]))


def page_dom(index: Path) -> str:
    """The page's DOM as headless Chromium built it from disk (after scripts and layout)."""
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                               index.resolve().as_uri()], capture_output=True, text=True,
                              timeout=120)
    if "<body" not in done.stdout:
        raise AssertionError(f"chromium returned no page; it said: {done.stderr[-2000:]}")
    return done.stdout
