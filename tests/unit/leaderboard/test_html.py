"""The HTML leaderboard: well-formed and self-contained (pure-Python parse, always), and rendered and sorted
by a real headless browser (Debian's chromium; skipped with a reason when it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from harness.leaderboard.aggregate import Cell, Row, SigTest, Table
from harness.leaderboard.render import to_html


def _table() -> Table:
    keys = ["en", "sw", "seen_mean", "unseen_mean", "perf/peak_mem_mb"]

    def row(method, base, p):
        cells = {k: Cell([base, base + 0.01, base + 0.02], ["0", "1", "2"]) for k in keys}
        cells["perf/peak_mem_mb"] = Cell([1000.0 * base], ["0"])
        return Row("llama", method, 3, cells, {"seen_mean": SigTest(base - 0.3, p, "paired")})

    return Table("acc", ["en", "sw"], keys,
                 [row("joint_sft", 0.3, float("nan")), row("b<&>", 0.5, 0.01), row("pcgrad", 0.1, 0.4)])


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.external: list[str] = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http", "//")):
                self.external.append(attrs[key])
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None


def test_html_well_formed_and_self_contained():
    page = to_html(_table(), "t")
    parser = _Cells()
    parser.feed(page)
    header, *body = parser.rows
    assert header[:5] == ["model", "method", "n", "en", "sw"] and "p(seen)" in header
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    assert body[1][1] == "b<&>"  # escaped in the source, intact once parsed
    assert "b<&>" not in page
    assert not parser.external and "<script>" in page and "sortBy" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless browser check needs chromium (apt-get install -y chromium)")
def test_html_renders_and_sorts_in_headless_chromium(tmp_path):
    page = to_html(_table(), "polymoo leaderboard")
    path = tmp_path / "lb.html"
    path.write_text(page)
    shot = tmp_path / "lb.png"
    res = _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,400", path.as_uri())
    assert shot.exists() and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 2000, res.stderr[-2000:]
    # click-to-sort: sort by the 'en' column (index 3) twice -> ascending then descending
    sorted_page = tmp_path / "sorted.html"
    sorted_page.write_text(page.replace("</body>", "<script>sortBy(3);</script></body>"))
    dom = _chromium(tmp_path / "profile", "--dump-dom", sorted_page.as_uri()).stdout
    methods = re.findall(r"<tr><td[^>]*>llama</td><td[^>]*>([^<]+)</td>", dom)
    assert methods == ["pcgrad", "joint_sft", "b&lt;&amp;&gt;"], dom[-3000:]
    sorted_page.write_text(page.replace("</body>", "<script>sortBy(3);sortBy(3);</script></body>"))
    dom = _chromium(tmp_path / "profile", "--dump-dom", sorted_page.as_uri()).stdout
    assert re.findall(r"<tr><td[^>]*>llama</td><td[^>]*>([^<]+)</td>", dom) == ["b&lt;&amp;&gt;", "joint_sft", "pcgrad"]
