"""Repository layout and configuration that the tools rely on (fast; no notebooks run)."""
from __future__ import annotations
import configparser, json, os, re, stat, subprocess, sys
from pathlib import Path

import pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tools'))
import docs  # tools/docs.py

def cfg():
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT/'settings.ini'); return c['DEFAULT']

def test_quarto_yml_is_one_file():
    "The top-level _quarto.yml is the source; nbs/_quarto.yml (where nbdev 2 looks) must be the same file."
    top, nbs = ROOT/'_quarto.yml', ROOT/'nbs'/'_quarto.yml'
    assert top.is_file() and nbs.exists()
    assert nbs.resolve() == top.resolve() or nbs.read_text() == top.read_text(), 'nbs/_quarto.yml differs from _quarto.yml'
    q = yaml.safe_load(top.read_text())
    assert q['project']['type'] == 'website' and 'nbdev.yml' in q['metadata-files'] and 'sidebar.yml' in q['metadata-files']
    assert (ROOT/'nbs'/'styles.css').exists(), 'the css named by _quarto.yml is missing'

def test_settings_nbdev2():
    c = cfg()
    assert c['lib_path'] == 'mmlit' and c['nbs_path'] == 'nbs' and c.get('readme_nb', 'index.ipynb') == 'index.ipynb'
    assert 'tags' in c['allowed_cell_metadata_keys'].split(','), "papermill's parameters tag must survive nbdev_clean"
    reqs = c['requirements'] + ' ' + c['dev_requirements']
    assert re.search(r'\bnbdev[<>=,.\d]*<3', reqs), 'nbdev 3 no longer reads settings.ini: pin nbdev<3'
    assert re.search(r'(?<![\w-])torch>=[\d.]+,<', c['requirements']), 'torch must be a bounded range (CPU wheel first)'
    assert (ROOT/'nbs'/c.get('readme_nb', 'index.ipynb')).exists()

def test_ci_entry_point_runs_make_test():
    ci = ROOT/'.ci'/'run'
    assert ci.exists() and ci.stat().st_mode & stat.S_IXUSR, '.ci/run must be executable'
    assert re.search(r'^exec make test$', ci.read_text(), re.M)
    mk = (ROOT/'Makefile').read_text()
    for target in ('install', 'demo', 'test', 'docs', 'readme', 'chromium', 'export-check', 'clean-check', 'nbtest', 'tutorials', 'pytest'):
        assert re.search(rf'^{target}:', mk, re.M), f'Makefile lacks target {target}'
    assert 'torch==2.13.0' in mk and mk.index('$(TORCH)') < mk.index('-e ".[dev]"'), 'torch must be installed first'

def test_readme_quick_start_is_two_commands():
    "The README's Quick start is exactly `make demo` and `make test`."
    r = (ROOT/'README.md').read_text()
    qs = r.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```(?:bash|sh)?\n(.*?)```', qs, re.S).group(1)
    assert [l.strip() for l in block.strip().splitlines()] == ['make demo', 'make test']

def test_readme_is_generated_from_index():
    assert (ROOT/'README.md').read_text() == docs.readme_text(), 'README.md is stale: run `make readme`'

def test_generated_folders_are_ignored():
    for d in ('_executed', '_proc', '_site', '_docs', '_screenshots', '.venv'):
        r = subprocess.run(['git', 'check-ignore', '-q', d + '/x'], cwd=ROOT)
        assert r.returncode == 0, f'{d}/ must be gitignored'

def test_fix_links():
    "Doc-host links become root-relative; links to renamed notebooks follow the rename, from any folder."
    ren = {'00_core.ipynb': 'core.ipynb', 'tutorials/01_quick.ipynb': 'tutorials/quick.ipynb'}
    host = 'https://mmlit.github.io/'
    s = '[a](https://mmlit.github.io/core.html#x) [b](00_core.ipynb#y) [c](tutorials/01_quick.ipynb) [d](https://x.org/a.ipynb)'
    from pathlib import PurePosixPath as P
    assert docs._fix_links(s, P('index.ipynb'), ren, host) == \
        '[a](/core.html#x) [b](core.ipynb#y) [c](tutorials/quick.ipynb) [d](https://x.org/a.ipynb)'
    assert docs._fix_links('<a href="../00_core.ipynb">', P('tutorials/quick.ipynb'), ren, host) == '<a href="../core.ipynb">'

def _mixed_import_cells(fn):
    "Cells that nbdev's docs processing re-runs on their own because they mix imports with other code."
    import ast
    from nbdev.process import NBProcessor
    from nbdev.processors import _ast_contains
    out = []
    for c in NBProcessor(fn).nb.cells:
        if c.cell_type != 'code' or not c.source.strip(): continue
        d = c.directives_ or {}
        if d.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or d.get('eval:', [''])[0].lower() == 'false': continue
        try: trees = c.parsed_()
        except SyntaxError: continue
        if trees and _ast_contains(trees, (ast.Import, ast.ImportFrom)) and _ast_contains(trees, (ast.Expr, ast.Assign)):
            out.append(f'{Path(fn).relative_to(ROOT)} cell {c.idx_}: {c.source.strip().splitlines()[0][:70]}')
    return out

def test_notebook_cells_keep_imports_apart():
    """nbdev's doc processing (nbdev_docs, make docs) re-runs every cell that contains an import, without the cells
    before it: a cell mixing `import ...` with code that uses earlier variables breaks the docs build. Keep imports in
    their own cell (see the FAQ of nbdev: "Found cells containing imports and other code")."""
    from nbdev.doclinks import nbglob
    bad = [m for f in nbglob(ROOT/'nbs', as_path=True) for m in _mixed_import_cells(f)]
    assert not bad, 'move these imports into a cell of their own:\n' + '\n'.join(bad)


def test_readme_benchmark_numbers_come_from_results():
    "Every baseline MAE quoted in the README is the mean ± std of the committed results record it names."
    import re
    from mmlit.metrics import BenchResult
    rows = re.findall(r"^\| (\w+) \([^)]*\) \| ([\d.]+) ± ([\d.]+) \|", (ROOT/"README.md").read_text(), re.M)
    assert len(rows) >= 6, rows
    for task, mean, std in rows:
        res = BenchResult.from_json(ROOT/"benchmarks"/"results"/f"matbench_{task}"/"results.json")
        assert res.model == "baseline-magpie-rf"
        d = len(mean.split(".")[1])   # the README rounds to the decimals it shows
        assert f"{res.mean():.{d}f}" == mean and f"{res.std():.{d}f}" == std, (task, res.mean(), res.std())


def test_readme_imkt_numbers_come_from_the_ablation():
    "The README's best language model per task is the best committed ablation record, quoted with its change vs the baseline."
    import re
    summ = json.loads((ROOT/"benchmarks/results/imkt_ablation/summary.json").read_text())["rows"]
    rows = re.findall(r"^\| (\w+) \| `(clm-[^`]+)` \| ([\d.]+) ± ([\d.]+) \| ([+-][\d.]+) % \|", (ROOT/"README.md").read_text(), re.M)
    assert len(rows) == 6, rows
    for task, cfg, mean, std, change in rows:
        mine = [r for r in summ if r["task"] == f"matbench_{task}" and r["source"].startswith("this run")
                and not re.search(r"-seed\d+$", r["model"])]
        best = min(mine, key=lambda r: r["mae_mean"])
        base = next(r for r in summ if r["task"] == f"matbench_{task}" and "mmlit baseline" in r["model"])
        d = len(mean.split(".")[1])
        assert best["model"] == cfg, (task, best["model"], cfg)
        assert (f"{best['mae_mean']:.{d}f}", f"{best['mae_std']:.{d}f}") == (mean, std), (task, best)
        assert f"{(best['mae_mean'] / base['mae_mean'] - 1) * 100:+.1f}" == change, (task, best, base)


def test_readme_structure_numbers_come_from_results():
    "The README's crystal-graph results are the committed records they name (model, task, mean ± std)."
    import re
    from mmlit.metrics import BenchResult
    rows = re.findall(r"^\| `(cgcnn|alignn[\w-]*)` \| (\w+) \| ([\d.]+) ± ([\d.]+) \|", (ROOT/"README.md").read_text(), re.M)
    assert len(rows) >= 2, rows
    for model, task, mean, std in rows:
        res = BenchResult.from_json(ROOT/"benchmarks"/"results"/"structures"/f"matbench_{task}_{model}"/"results.json")
        assert res.model.startswith(model.split("-")[0]) and res.task == f"matbench_{task}"
        d = len(mean.split(".")[1])
        assert (f"{res.mean():.{d}f}", f"{res.std():.{d}f}") == (mean, std), (model, task, res.mean(), res.std())


def test_readme_composition_recipe_numbers_come_from_results():
    "The README's tuned tree / elm-fast / ensemble MAEs are the committed runs (the ensemble from their predictions)."
    import re
    import numpy as np
    import pandas as pd
    from mmlit.metrics import BenchResult
    rows = re.findall(r"^\| (\w+) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+) \((\d) folds?\)[^|]* \| ([\d.]+) ± ([\d.]+) \|",
                      (ROOT/"README.md").read_text(), re.M)
    assert len(rows) >= 3, rows
    from mmlit.bench.core import load_bench
    from mmlit.metrics import paired_mean
    for task, tm, ts, em, es, n, am, as_ in rows:
        tree, elm = (load_bench(ROOT/"benchmarks/results/composition"/f"matbench_{task}"/m) for m in ("tuned-tree", "elm-fast"))
        d = len(tm.split(".")[1])
        assert (f"{tree.mean():.{d}f}", f"{tree.std():.{d}f}") == (tm, ts), (task, tree.mean())
        assert (f"{elm.mean():.{d}f}", f"{elm.std():.{d}f}", len(elm.folds)) == (em, es, int(n)), (task, elm.mean())
        ens = paired_mean(elm, tree).mae
        assert (f"{ens.mean():.{d}f}", f"{ens.std(ddof=0):.{d}f}") == (am, as_), (task, ens.mean())
