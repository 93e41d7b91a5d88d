"""`septlab report`: the HTML page parses, embeds and links every plot, explains each violating row; a
real headless browser renders it (marker `browser`, skipped where Debian's chromium is not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def septlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from septlab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.rows = 0
        self.pres: list[str] = []
        self._in_pre = False
        self._in_body = False
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("meta", "img", "br", "link"):
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "tr" and "tbody" in self.stack:
            self.rows += 1
        elif tag == "pre":
            self._in_pre = True
            self.pres.append("")

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pres[-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    res = septlab("compare", "-s", "seed", "--variants", "rcu-free,tdx-free", "-n", "2", "--json",
                  str(d / "results.json"), "--trace-dir", str(d / "traces"))
    assert res.returncode == 0, res.stderr
    rep = septlab("report", str(d / "results.json"), "--out", str(d / "out"))
    assert rep.returncode == 0, rep.stderr
    return d


def test_the_page_parses_and_references_every_plot(report):
    out = report / "out"
    page = _Page()
    page.feed((out / "index.html").read_text())
    page.close()
    assert page.stack == []  # every element closed in order
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["answer.png", "memory.png"]
    assert sorted(i["data-file"] for i in page.imgs) == pngs
    for img in page.imgs:  # embedded, not fetched: the page stands alone
        assert img["src"].startswith("data:image/png;base64,")
        import base64

        assert base64.b64decode(img["src"].split(",", 1)[1]) == (out / img["data-file"]).read_bytes()
    assert set(pngs) <= set(page.links)
    results = json.loads((report / "results.json").read_text())["results"]
    assert page.rows == len(results) == 4
    # one counterexample: rcu-free with DPAMT frees a PAMT-backed page from the RCU callback
    violating = [r for r in results if r["kind"] == "violated"]
    assert [(r["variant"], r["dpamt"]) for r in violating] == [("rcu-free", True)]
    assert len(page.pres) == 1 and "septlab explain: 'lock-context'" in page.pres[0]
    assert "WARNING: inconsistent lock state" in page.pres[0] and "<-" in page.pres[0]


def test_compare_json_carries_the_memory_answer(report):
    rows = {(r["variant"], r["dpamt"]): r for r in json.loads((report / "results.json").read_text())["results"]}
    rcu, tdx = rows[("rcu-free", False)]["memory"], rows[("tdx-free", False)]["memory"]
    # deferring the free to the RCU callback holds reclaimed S-EPT pages for grace periods; tdx-free none
    assert rcu["peak_retained_pages"] > 0 and rcu["held_grace_periods_mean"] > 0
    assert tdx["peak_retained_pages"] == 0 and tdx["held_grace_periods_mean"] == 0
    assert rcu["peak_retained_mib"] == pytest.approx(rcu["peak_retained_pages"] * 4096 / 2**20, abs=1e-3)
    assert rows[("tdx-free", True)]["memory"]["peak_pamt_pages"] > 0 == rows[("tdx-free", False)]["memory"]["peak_pamt_pages"]
    assert rows[("rcu-free", True)]["trace"] and Path(rows[("rcu-free", True)]["trace"]).exists()


def test_report_refuses_what_is_not_a_compare_result(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"scenario": "seed", "violations": {}}))
    res = septlab("report", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "field 'results'" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "o").exists()


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,2000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.mark.browser
def test_the_page_renders_in_a_real_browser(report):
    from selenium.webdriver.common.by import By

    drv = _browser()
    try:
        drv.get((report / "out" / "index.html").as_uri())
        assert drv.title == "septlab report: scenario seed"
        imgs = drv.find_elements(By.TAG_NAME, "img")
        assert len(imgs) == 2
        for img in imgs:  # decoded by the browser, drawn at a real size
            assert drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 600
            assert img.size["width"] > 300
        rows = drv.find_elements(By.CSS_SELECTOR, "#comparison tbody tr")
        assert len(rows) == 4
        bad = drv.find_elements(By.CSS_SELECTOR, "tr.violated td.v")
        assert len(bad) == 1 and "lock-context" in bad[0].text
        assert "176, 58, 46" in bad[0].value_of_css_property("color")  # styled: the inline CSS applied
        pre = drv.find_element(By.CSS_SELECTOR, "pre.explain")
        assert "inconsistent lock state" in pre.text
        shot = report / "out" / "screenshot.png"
        drv.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        drv.quit()
