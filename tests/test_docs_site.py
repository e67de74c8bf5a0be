"""The built documentation site (`make docs` -> _site/) opened in a real browser: headless Chromium.

`--dump-dom` gives the page's DOM after its scripts ran (title, sidebar, show_doc blocks, plots); `--screenshot` saves
what a reader sees into `_screenshots/` (gitignored), and the PNG must not be blank. In `make test` the site is built
before pytest runs, so these tests run there; elsewhere they skip, with the reason, when the site has not been built
or Chromium is missing (under CI=true only a non-root machine without Chromium may skip).
"""
from __future__ import annotations
import base64, html, io, os, re, shutil, subprocess, tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT/'_site'
SHOTS = ROOT/'_screenshots'
CHROMIUM = next((p for p in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if p), None)
IN_CI = os.environ.get('CI', '').lower() == 'true'

def _unavailable() -> str | None:
    if not (SITE/'index.html').exists(): return f'the docs site is not built ({SITE}/index.html missing): run `make docs`'
    if CHROMIUM is None: return 'Chromium is not installed (`make chromium` installs it as root)'
    return None

@pytest.fixture(scope='module', autouse=True)
def _need_site_and_browser():
    why = _unavailable()
    if why is None: return
    if IN_CI and not (CHROMIUM is None and os.geteuid() != 0): pytest.fail(f'under CI: {why}')
    pytest.skip(why)

def _chromium(url: str, *args: str, timeout=120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
               '--disable-component-update', '--no-first-run', '--disable-sync', '--hide-scrollbars',
               f'--user-data-dir={profile}', *args, url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'chromium failed on {url}: {r.stderr[-2000:]}'
    return r

def dom(page: Path) -> str:
    "The page's DOM after its scripts ran."
    return _chromium(page.as_uri(), '--virtual-time-budget=3000', '--dump-dom').stdout

def screenshot(page: Path, name: str, fragment='', size=(1280, 1400)) -> Path:
    SHOTS.mkdir(exist_ok=True)
    out = SHOTS/f'{name}.png'
    out.unlink(missing_ok=True)
    _chromium(page.as_uri() + fragment, '--virtual-time-budget=3000', f'--window-size={size[0]},{size[1]}',
              f'--screenshot={out}')
    assert out.exists(), f'no screenshot written for {page}'
    return out

def assert_not_blank(png: Path | bytes, min_side=100):
    "A real picture: decodes, has some size, and is not one flat colour."
    from PIL import Image
    im = Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert('RGB')
    assert min(im.size) >= min_side, f'image too small: {im.size}'
    colours = im.getcolors(im.size[0]*im.size[1])
    assert colours is not None and len(colours) > 20, f'image has only {len(colours or [])} colours: blank?'
    non_white = sum(n for n, c in colours if sum(c) < 3*240) / (im.size[0]*im.size[1])
    assert non_white > 0.003, f'image is {100*(1-non_white):.2f}% white: blank?'

def text(s: str) -> str: return html.unescape(re.sub(r'<[^>]+>', '', s))

def show_doc_blocks(d: str) -> list[str]:
    "Names documented by nbdev's show_doc: an H3 anchored at the name, followed by its `def`/`class` signature."
    out = []
    for part in re.split(r'(?=<h3 )', d):   # one piece per H3, so a heading's match never runs into the next one's
        m = re.match(r'<h3 id="([\w.]+)"[^>]*>.*?</h3>(.*)', part, re.S)
        if m and re.search(rf'\b(def|class)\s+{re.escape(m.group(1).split(".")[-1])}\b', text(m.group(2)[:3000])):
            out.append(m.group(1).split('.')[-1])
    return out

def local_links(d: str, page: Path) -> list[Path]:
    hrefs = re.findall(r'<a [^>]*href="([^"#?]+)(?:[#?][^"]*)?"', d)
    return [(page.parent/h).resolve() for h in hrefs if not re.match(r'^[a-z]+:', h)]

def pages() -> list[Path]: return sorted(SITE.rglob('*.html'))

def _is_blank(png: bytes) -> bool:
    try: assert_not_blank(png); return False
    except AssertionError: return True

def page_with_plot() -> tuple[Path, str, bytes]:
    "A page whose notebook drew a (non-blank) matplotlib plot, tutorials first: the page, the cell id, the PNG."
    cands = sorted(pages(), key=lambda p: ('tutorials' not in p.parts, str(p)))
    for p in cands:
        s = p.read_text(encoding='utf-8')
        for m in re.finditer(r'<div id="(cell-[\w-]+)" class="cell">(?:(?!<div id="cell-).)*?<img src="data:image/png;base64,([^"]+)"', s, re.S):
            png = base64.b64decode(m.group(2))
            if not _is_blank(png): return p, m.group(1), png
    pytest.fail('no page of the site shows a plot (a non-blank PNG from an executed notebook)')

# ------------------------------------------------------------------------------------------------ tests

def test_index_page():
    page = SITE/'index.html'
    d = dom(page)
    assert re.search(r'<title>[^<]*mmlit[^<]*</title>', d), 'index title'
    assert re.search(r'<h1[^>]*>\s*mmlit', d), 'index heading'
    body = text(d)
    for phrase in ('make demo', 'make test', 'make docs', 'matbench', 'SHAP-IQ'):
        assert phrase in body, f'index page lacks {phrase!r}'
    # the sidebar lists every page of the site, and every local link on the page resolves to a file
    links = set(local_links(d, page))
    missing = [p.relative_to(SITE) for p in pages() if p.resolve() not in links and p.name != 'index.html']
    assert not missing, f'pages not linked from the index (sidebar): {missing}'
    broken = [str(l) for l in links if not l.exists()]
    assert not broken, f'broken links on the index page: {broken}'
    assert_not_blank(screenshot(page, 'index'))

def test_api_page_core():
    page = SITE/'core.html'
    assert page.exists(), f'no core.html in the site: {[p.name for p in pages()]}'
    d = dom(page)
    assert re.search(r'<title>[^<]*Core[^<]*</title>', d), 'core page title'
    shown = show_doc_blocks(d)
    assert 'seed_everything' in shown and len(shown) >= 4, f'show_doc blocks on the core page: {shown}'
    assert 'index.html' in {l.name for l in local_links(d, page)}, 'core page does not link back to the index'
    assert_not_blank(screenshot(page, 'core'))

def test_every_page_has_title_and_no_broken_local_link():
    bad = {}
    for p in pages():
        s = p.read_text(encoding='utf-8')
        if not re.search(r'<title>\s*\S', s): bad[str(p.relative_to(SITE))] = 'no title'
        broken = [str(l.relative_to(SITE) if l.is_relative_to(SITE) else l) for l in local_links(s, p) if not l.exists()]
        if broken: bad[str(p.relative_to(SITE))] = broken
    assert not bad, bad

def test_a_plot_renders():
    page, cell, png = page_with_plot()
    assert_not_blank(png)  # the figure itself
    d = dom(page)
    assert f'id="{cell}"' in d and 'data:image/png;base64' in d, f'{page.name}: plot missing from the DOM'
    # what the browser draws: the page's figure on its own (a screenshot scrolled to a fragment comes out blank)
    with tempfile.TemporaryDirectory() as t:
        f = Path(t)/'plot.html'
        f.write_text(f'<html><body style="margin:0"><img style="max-width:100%;max-height:100vh" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     '</body></html>')
        assert_not_blank(screenshot(f, 'plot-' + page.stem, size=(1000, 700)))
