#!/usr/bin/env python
"""Build mmlit's documentation site and README.md offline, without Quarto.

nbdev 2 renders docs with Quarto (`nbdev_docs`), which cannot be installed on machines without internet. This script
does the same job with pure-Python tools, and leaves nbdev's standard configuration untouched so `nbdev_docs` still
works wherever Quarto is installed:

1. `tutorials`: run every notebook in `nbs/tutorials/` with papermill (kernel `python3`) and the small parameters in
   `nbs/tutorials/ci_params.yml` (notebook file name -> mapping of parameters; none = the notebook's defaults).
   The executed copies land in `_executed/tutorials/` (gitignored). A failing tutorial fails the step.
2. `execute`: every other notebook nbdev knows about must have an executed copy with its outputs in `_executed/`.
   `make nbtest` (tools/nbtest.py: nbdev_test that keeps what it ran) writes them; this step runs, the same way, only
   the notebooks whose copy is missing or older than the notebook or the library. The committed notebooks are
   clean; the outputs (plots, tables) in the docs come from these runs.
3. `site`: nbdev's own processors (`nbdev.serve.proc_nbs`: show_doc blocks, hidden cells, doc links) turn `_executed/`
   into `_proc/`; then each processed notebook is renamed to nbdev's `output-file` (`00_core.ipynb` -> `core.ipynb`,
   so page addresses match an nbdev/Quarto site), links are made local, the sidebar is written, and
   `smalldocs render _proc` builds the site into `_site/`. `smalldocs check` must find no broken link.
4. `readme`: README.md from `nbs/index.ipynb` (hidden cells and `#|` directives dropped, notebook links pointed at the
   repository's files). `readme --check` fails when the committed README.md differs.

Run from the repository root with the project's venv: `make docs`, `make readme` (see the Makefile).
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
EXEC = ROOT/'_executed'       # executed notebooks (outputs included)
PROC = ROOT/'_proc'           # nbdev-processed notebooks, the smalldocs project
SITE = ROOT/'_site'           # the rendered site
TUT = 'tutorials'             # folder of papermill-run tutorials inside nbs/
NB_TIMEOUT = int(os.environ.get('MMLIT_NB_TIMEOUT', 900))  # seconds per tutorial

def _cfg():
    from nbdev.config import get_config
    return get_config(path=ROOT)

def _nbs() -> Path: return Path(_cfg().nbs_path)

def _notebooks() -> list[PurePosixPath]:
    "Notebooks nbdev would test/document, relative to nbs/ (nbdev's rules: files and folders starting `_`/`.` skipped)."
    from nbdev.doclinks import nbglob
    nbs = _nbs()
    return sorted(PurePosixPath(Path(f).relative_to(nbs).as_posix()) for f in nbglob(nbs, as_path=True))

def _is_tutorial(rel: PurePosixPath) -> bool: return rel.parts[0] == TUT and len(rel.parts) > 1

# The docs read like a book: pages grouped by wing, named by the module prefix of the page (`struct.graph` ->
# Structure). A page whose prefix is not listed lands in "More" (so a new wing shows up before it gets a title here).
WINGS = [('Core', ('core', 'registry', 'cli', 'records', 'batch')), ('Data', ('data',)), ('Training', ('train', 'protocol', 'metrics', 'testing', 'ensemble')),
         ('Composition', ('comp', 'baseline', 'treeio')), ('Structure', ('struct',)), ('Text & image', ('text', 'image')),
         ('Fusion', ('fusion',)), ('exKT', ('exkt',)), ('Interpretation', ('interpret',)), ('Benchmarks', ('bench',)),
         ('Predictor', ('predictor', 'predictor_columns', 'predictor_settings', 'predictor_model', 'screen'))]

def _wings(pages: list) -> list:
    "[(section title, pages in build order)] for the top-level module pages, empty wings left out."
    key = lambda n: n.stem.split('.')[0]
    out = [(title, [n for n in pages if key(n) in prefixes]) for title, prefixes in WINGS]
    known = {p for _, ps in WINGS for p in ps}
    out.append(('More', [n for n in pages if key(n) not in known]))
    return [(t, ps) for t, ps in out if ps]

def _stale(dst: Path, *srcs: Path) -> bool:
    "Whether `dst` is missing or older than any of `srcs` (files) or the library code."
    if not dst.exists(): return True
    lib = [p for p in (ROOT/_cfg().lib_name).rglob('*.py')]
    newest = max([p.stat().st_mtime for p in [*srcs, *lib] if p.exists()], default=0)
    return dst.stat().st_mtime < newest

def _say(*a): print('[docs]', *a, flush=True)

# ---------------------------------------------------------------- 1. tutorials (papermill)

def ci_params() -> dict:
    "The CI parameters of each tutorial, from nbs/tutorials/ci_params.yml (missing file/entry = notebook defaults)."
    import yaml
    f = _nbs()/TUT/'ci_params.yml'
    d = (yaml.safe_load(f.read_text()) or {}) if f.exists() else {}
    if not isinstance(d, dict): sys.exit(f'{f}: expected a mapping notebook-name -> parameters, got {type(d).__name__}')
    return d

def run_tutorials(force=False, n_workers=2) -> int:
    "papermill each stale tutorial (in parallel, one kernel each) into _executed/tutorials/; 1 if any failed."
    import yaml
    from concurrent.futures import ThreadPoolExecutor
    params, nbs = ci_params(), _nbs()
    tuts = [r for r in _notebooks() if _is_tutorial(r)]
    if not tuts: _say('no tutorials in', nbs/TUT); return 0
    todo = [r for r in tuts if force or _stale(EXEC/r, nbs/r, nbs/TUT/'ci_params.yml')]
    for r in sorted(set(tuts) - set(todo)): _say(f'{r}: up to date')
    def _run(rel):
        src, dst = nbs/rel, EXEC/rel
        p = params.get(rel.name, {}) or {}
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, '-m', 'papermill', str(src), str(dst), '-k', 'python3', '--cwd', str(src.parent),
               '--no-progress-bar', '--execution-timeout', str(NB_TIMEOUT), '-y', yaml.safe_dump(p) if p else '{}']
        _say(f'{rel}: papermill -k python3' + ''.join(f' -p {k} {v}' for k, v in p.items()))
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: dst.unlink(missing_ok=True)  # never leave a failed run where the docs would pick it up
        return rel, r.returncode, time.time()-t0, r.stderr[-8000:]
    failed = []
    with ThreadPoolExecutor(max(1, n_workers)) as ex:
        for rel, rc, dt, err in ex.map(_run, todo):
            _say(f'{rel}: ' + ('FAILED' if rc else 'ok') + f' in {dt:.0f} s')
            if rc: failed.append(str(rel)); print(err, file=sys.stderr)
    if failed: _say('tutorials that failed:', *failed); return 1
    return 0

# ---------------------------------------------------------------- 2. execute the other notebooks

def execute_all(n_workers=2, force=False, only=None) -> int:
    "Run (as nbdev_test does, see tools/nbtest.py) each notebook whose executed copy is missing or stale."
    sys.path.insert(0, str(ROOT/'tools'))
    import nbtest
    nbs = _nbs()
    rels = [r for r in _notebooks() if not _is_tutorial(r) and (not only or r.name in only or str(r) in only)]
    todo = [r for r in rels if force or _stale(EXEC/r, nbs/r)]
    if not todo: _say(f'all {len(rels)} executed notebooks are up to date (from `make nbtest`)'); return 0
    _say(f'executing {len(todo)} notebook(s):', *map(str, todo))
    ok = nbtest.run([nbs/r for r in todo], n_workers)
    return 0 if ok else 1

# ---------------------------------------------------------------- 3. process and render the site

def _stage(allow_missing=False):
    "Mirror nbs/ into _executed/: executed notebooks are there already; copy every other file (config, css, images)."
    nbs = _nbs()
    missing = [str(r) for r in _notebooks() if not (EXEC/r).exists()]
    if missing and not allow_missing: sys.exit(f'[docs] not executed yet (run `make docs`): {", ".join(missing)}')
    if missing: _say('WARNING: building a partial site without', *missing)
    for f in nbs.rglob('*'):
        rel = f.relative_to(nbs)
        if f.is_dir() or f.suffix == '.ipynb' or any(p.startswith('.') for p in rel.parts) or f.name == 'sidebar.yml': continue
        d = EXEC/rel; d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, d)  # follows symlinks: nbs/_quarto.yml -> ../_quarto.yml
    # executed notebooks whose source is gone would become stale pages
    keep = {str(r) for r in _notebooks()}
    for f in EXEC.rglob('*.ipynb'):
        if str(PurePosixPath(f.relative_to(EXEC).as_posix())) not in keep: f.unlink()

def _frontmatter(nb: dict) -> tuple[int, dict]:
    import yaml
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] == 'raw':
            s = ''.join(c['source']).strip()
            if s.startswith('---'):
                return i, yaml.safe_load(s.strip('-').strip()) or {}
    return -1, {}

_LINK = re.compile(r'(\]\(|href=")([^)"\s]+)')

def _fix_links(text: str, page: PurePosixPath, renames: dict, host: str) -> str:
    "Point links at pages of this site: the doc host's address -> root-relative; renamed notebooks -> new names."
    def sub(m):
        pre, url = m.groups()
        if host and url.startswith(host): url = '/' + url[len(host):].lstrip('/')
        elif not re.match(r'^[a-z]+:|^#|^/', url):
            path, _, frag = url.partition('#')
            if path.endswith('.ipynb'):
                tgt = os.path.normpath(os.path.join(str(page.parent), path)).replace(os.sep, '/')
                if tgt in renames:
                    path = os.path.relpath(renames[tgt], str(page.parent) or '.').replace(os.sep, '/')
                    url = path + ('#' + frag if frag else '')
        return pre + url
    return _LINK.sub(sub, text)

def _title(nb: dict, rel: PurePosixPath) -> str:
    return str(_frontmatter(nb)[1].get('title') or rel.stem)

def build_site(n_workers=2, allow_missing=False) -> int:
    import yaml
    from nbdev.serve import proc_nbs
    cfg = _cfg()
    _stage(allow_missing)
    _say('nbdev processing (show_doc, hidden cells, links) -> _proc/')
    proc_nbs(str(EXEC), n_workers=n_workers, force=True)
    host = (cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '/').strip('/')).rstrip('/') + '/'
    # rename each page to nbdev's output-file, so addresses match an nbdev/Quarto site (core.html, not 00_core.html)
    pages = sorted(PurePosixPath(p.relative_to(PROC).as_posix()) for p in PROC.rglob('*.ipynb') if '_site' not in p.parts)
    renames, nbjs = {}, {}
    for rel in pages:
        nb = json.loads((PROC/rel).read_text())
        i, fm = _frontmatter(nb)
        new = rel
        if fm.get('output-file'): new = rel.with_name(PurePosixPath(fm['output-file']).stem + '.ipynb')
        if new in nbjs: sys.exit(f'[docs] two notebooks render to {new}: rename one')
        renames[str(rel)] = str(new); nbjs[new] = (rel, nb, i, fm)
    for new, (rel, nb, i, fm) in nbjs.items():
        if i >= 0:  # smalldocs names pages after their file; output-file is Quarto's and now redundant
            fm.pop('output-file', None)
            nb['cells'][i]['source'] = '---\n' + yaml.safe_dump(fm, sort_keys=False, allow_unicode=True) + '---\n'
        for c in nb['cells']:
            if c['cell_type'] == 'markdown':
                c['source'] = _fix_links(''.join(c['source']), new, renames, host)
            for o in c.get('outputs', []):
                md = o.get('data', {}).get('text/markdown')
                if md is not None: o['data']['text/markdown'] = _fix_links(''.join(md), new, renames, host)
        (PROC/rel).unlink()
        (PROC/new).write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    # sidebar: the landing page, the library's modules grouped by wing (in build order), then each folder (tutorials, ...)
    inv = {v: k for k, v in renames.items()}  # new name -> source name (numbered: build order)
    top = sorted((n for n in nbjs if len(n.parts) == 1 and n.name != 'index.ipynb'), key=lambda n: inv[str(n)])
    contents = ['index.ipynb'] if PurePosixPath('index.ipynb') in nbjs else []
    for title, pages in _wings(top):
        contents.append({'section': title, 'contents': [str(n) for n in pages]})
    for folder in sorted({n.parts[0] for n in nbjs if len(n.parts) > 1}):
        sub = sorted((n for n in nbjs if n.parts[0] == folder), key=lambda n: inv[str(n)])
        contents.append({'section': folder.replace('_', ' ').title(), 'contents': [str(n) for n in sub]})
    (PROC/'sidebar.yml').write_text(yaml.safe_dump({'website': {'sidebar': {'contents': contents}}}, sort_keys=False))
    # Quarto-only settings that smalldocs ignores (nbdev uses them for README.md via Quarto): drop them in the copy
    q = yaml.safe_load((PROC/'_quarto.yml').read_text())
    fmt = q.get('format', {}); fmt.pop('commonmark', None); fmt.get('html', {}).pop('keep-md', None)
    (PROC/'_quarto.yml').write_text(yaml.safe_dump(q, sort_keys=False))
    y = yaml.safe_load((PROC/'nbdev.yml').read_text())
    y.setdefault('project', {})['output-dir'] = os.path.relpath(SITE, PROC)
    (PROC/'nbdev.yml').write_text(yaml.safe_dump(y, sort_keys=False))
    sd = [str(Path(sys.executable).parent/'smalldocs')]
    _say('smalldocs render _proc ->', SITE.relative_to(ROOT))
    if subprocess.run(sd + ['render', '--quiet', str(PROC)]).returncode: return 1
    _say('smalldocs check _proc (ignored settings, broken links)')
    if subprocess.run(sd + ['check', str(PROC)]).returncode: return 1
    _say(f'site: {SITE/"index.html"} ({len(list(SITE.rglob("*.html")))} pages)')
    return 0

# ---------------------------------------------------------------- 4. README.md

def readme_text() -> str:
    "README.md from the landing notebook: markdown as written, code as fenced blocks, hidden cells and directives gone."
    from execnb.nbio import read_nb
    from nbdev.process import extract_directives
    cfg = _cfg()
    src = _nbs()/cfg.get('readme_nb', 'index.ipynb')
    nb = read_nb(src)
    out = []
    for c in nb.cells:
        s = c.source
        if c.cell_type == 'code':
            d = extract_directives(c, remove=True)
            if d.keys() & {'hide', 'exporti', 'export', 'exports'} or 'include:' in d and d['include:'][0] == 'false': continue
            if d.get('echo:', [''])[0] == 'false': continue
            s = c.source.strip()
            if s: out.append(f'```python\n{s}\n```')
        elif c.cell_type == 'markdown':
            out.append(_readme_links(s.strip(), src.parent))
    return ('<!-- WARNING: generated from nbs/' + src.name + ' by `make readme`; edit the notebook, not this file -->\n\n'
            + '\n\n'.join(o for o in out if o) + '\n')

def _readme_links(text: str, nbdir: Path) -> str:
    "Relative links in the notebook (other notebooks, files) become repository paths, so they work on any git host."
    def sub(m):
        pre, url = m.groups()
        if re.match(r'^[a-z]+:|^#|^/', url): return pre + url
        path, _, frag = url.partition('#')
        p = os.path.relpath(os.path.normpath(nbdir/path), ROOT).replace(os.sep, '/')
        return pre + p + ('#' + frag if frag else '')
    return _LINK.sub(sub, text)

def readme(check=False) -> int:
    new, f = readme_text(), ROOT/'README.md'
    if check:
        if not f.exists() or f.read_text() != new:
            import difflib
            sys.stdout.writelines(difflib.unified_diff(f.read_text().splitlines(True) if f.exists() else [],
                                                       new.splitlines(True), 'README.md (committed)', 'README.md (from nbs/index.ipynb)'))
            print('[docs] README.md is out of date: run `make readme` and commit it'); return 1
        print('[docs] README.md matches nbs/index.ipynb'); return 0
    f.write_text(new); print('[docs] wrote README.md'); return 0

# ---------------------------------------------------------------- command line

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sp = ap.add_subparsers(dest='cmd', required=True)
    p = sp.add_parser('tutorials', help='papermill the tutorials with their CI parameters'); p.add_argument('--force', action='store_true')
    p.add_argument('--n_workers', type=int, default=2)
    p = sp.add_parser('execute', help='execute the other notebooks into _executed/')
    p.add_argument('--n_workers', type=int, default=2); p.add_argument('--force', action='store_true')
    p.add_argument('--only', nargs='*', help='notebook names to execute (default: all)')
    p = sp.add_parser('site', help='process _executed/ and render _site/'); p.add_argument('--n_workers', type=int, default=2)
    p.add_argument('--allow_missing', action='store_true', help='render without the notebooks not executed (a partial site)')
    p = sp.add_parser('readme', help='write README.md from nbs/index.ipynb'); p.add_argument('--check', action='store_true')
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    if a.cmd == 'tutorials': return run_tutorials(a.force, a.n_workers)
    if a.cmd == 'execute': return execute_all(a.n_workers, a.force, a.only)
    if a.cmd == 'site': return build_site(a.n_workers, a.allow_missing)
    if a.cmd == 'readme': return readme(a.check)

if __name__ == '__main__': sys.exit(main())
