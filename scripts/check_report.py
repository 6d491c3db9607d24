"""Render a kdscope ``report.html`` in headless Chromium and check that it reads.

Checks: the page loads, nothing is written to the console as an error (uncaught errors,
``console.error``, resources that fail to load) and every ``<img>`` decoded (``naturalWidth > 0``).
Not part of the test suite (CI has no Chromium); run it by hand::

    python scripts/check_report.py runs/<study>/report.html [--chromium /usr/bin/chromium]

The report itself is never modified: a copy with a small probe script at the top of ``<head>``
is rendered with ``--dump-dom``, and the probe writes its findings into the dumped DOM.
Chromium's own console log (``--enable-logging=stderr``) is scanned for errors as well.
Exit status 0 when every check passes, 1 otherwise, 2 when Chromium cannot be run.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: collects errors from the start of parsing; after ``load``, checks the images and writes the
#: findings as JSON into ``<pre id="kdscope-check">``
PROBE = """<script>
(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    origError.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window ? "failed to load <" + t.tagName.toLowerCase() + ">"
                                  : "uncaught: " + e.message);
  }, true);
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.src.slice(0, 60); });
    var out = document.createElement("pre");
    out.id = "kdscope-check";
    out.textContent = JSON.stringify({loaded: true, images: imgs.length, broken: broken,
                                      errors: errors, title: document.title});
    document.body.appendChild(out);
  });
})();
</script>"""

RESULT = re.compile(r'<pre id="kdscope-check">(.*?)</pre>', re.S)
#: Chromium's log lines for console messages of level error, e.g.
#: ``[...:ERROR:CONSOLE(12)] "Uncaught ...", source: file:///... (12)``
CONSOLE_ERROR = re.compile(r":ERROR:CONSOLE\(\d+\)\].*|:CONSOLE\(\d+\)\] \"Uncaught.*")


def find_chromium(given: str | None) -> str | None:
    """The Chromium executable: ``given``, else the first of the usual names on ``PATH``."""
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def with_probe(page: str) -> str:
    """``page`` with :data:`PROBE` at the top of its ``<head>`` (or of the document)."""
    head = re.search(r"<head[^>]*>", page, re.I)
    at = head.end() if head else 0
    return page[:at] + PROBE + page[at:]


def render(chromium: str, page: Path, timeout: float) -> tuple[str, str]:
    """The DOM after load and Chromium's stderr, rendering ``page`` headless."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "report.html"
        probed.write_text(with_probe(page.read_text(encoding="utf-8")), encoding="utf-8")
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            probed.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.stdout, proc.stderr


def check(dom: str, log: str) -> list[str]:
    """The problems found in a rendered DOM and Chromium's log (empty when the page is fine)."""
    match = RESULT.search(dom)
    if not match:
        return ["the page did not finish loading (no probe result in the DOM)"]
    found = json.loads(html.unescape(match.group(1)))
    problems = [f"image did not decode: {b}" for b in found["broken"]]
    problems += found["errors"]
    problems += [f"chromium log: {line.strip()}" for line in CONSOLE_ERROR.findall(log)]
    if found["images"] == 0:
        problems.append("the page has no <img> at all")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check every report given on the command line; print one verdict per report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report.html files")
    parser.add_argument("--chromium", help="the Chromium executable (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per report")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("no Chromium found: install it (apt-get install chromium) or pass --chromium")
        return 2
    failed = 0
    for report in args.reports:
        try:
            dom, log = render(chromium, report.resolve(), args.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"{report}: Chromium failed: {e}")
            return 2
        problems = check(dom, log)
        n_images = len(re.findall(r"<img\b", dom))
        if problems:
            failed += 1
            print(f"{report}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{report}: ok (loaded, no console errors, {n_images} images decoded)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
