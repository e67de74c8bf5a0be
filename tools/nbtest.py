#!/usr/bin/env python
"""`nbdev_test`, which also keeps what it ran: each notebook that passes is saved WITH its outputs to `_executed/`.

Same command line, same notebooks, flags, working directory, worker processes and report as `nbdev_test` (it *is*
`nbdev.test.nbdev_test`); the only addition is a hook on execnb's `CaptureShell.run_all` that, once a notebook has run
without error, copies the outputs of its cells (plots, tables, printed text) into a copy of the original notebook,
directives and all, under `_executed/` (gitignored). The docs build (`tools/docs.py`) renders those copies, so
`make test` executes every notebook once instead of twice (once to test, once for the docs).

    python tools/nbtest.py --n_workers 2 --timing     # any nbdev_test option works
"""
from __future__ import annotations
import json, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXEC = ROOT/'_executed'

_current: dict = {}

def _plain(o):
    "execnb's AttrDict/L outputs -> plain JSON-able objects."
    if isinstance(o, dict): return {k: _plain(v) for k, v in o.items() if not k.endswith('_')}
    if isinstance(o, (list, tuple)) or type(o).__name__ == 'L': return [_plain(v) for v in o]
    return o

def save_executed(nb, fn: Path, nbs_path: Path) -> Path:
    "Copy the outputs of the executed `nb` (read from `fn` by nbdev) into the original notebook; write it to _executed/."
    orig = json.loads(Path(fn).read_text(encoding='utf-8'))
    for c in nb.cells:
        i = getattr(c, 'idx_', None)
        if c.get('cell_type') != 'code' or i is None or i >= len(orig['cells']): continue
        o = orig['cells'][i]
        if o['cell_type'] != 'code': continue
        o['outputs'] = _plain(list(c.get('outputs', [])))
        o['execution_count'] = c.get('execution_count')
    dst = EXEC/Path(fn).resolve().relative_to(Path(nbs_path).resolve())
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix('.tmp')
    tmp.write_text(json.dumps(orig, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    tmp.replace(dst)
    return dst

_orig: dict = {}

def _test_nb(fn, *args, **kwargs):
    "nbdev's test_nb, remembering which notebook this worker runs (module level: workers get it by pickling)."
    install_hooks()  # a no-op in forked workers; a spawned worker imports this module fresh
    _current['fn'] = Path(fn)
    (EXEC/Path(fn).resolve().relative_to(_orig['nbs_path'])).unlink(missing_ok=True)  # no stale copy if it fails
    return _orig['test_nb'](fn, *args, **kwargs)
_test_nb._saves_outputs = True

def _run_all(self, nb, *args, **kwargs):
    "execnb's run_all, then save the outputs when every cell ran (it raises at the first failing cell)."
    res = _orig['run_all'](self, nb, *args, **kwargs)
    if self.exc is None and _current.get('fn'): save_executed(nb, _current['fn'], _orig['nbs_path'])
    return res

def install_hooks():
    "Wrap nbdev's per-notebook test and execnb's run_all (in this process; forked workers inherit the wrappers)."
    import nbdev.test
    from execnb.shell import CaptureShell
    from nbdev.config import get_config
    if _orig: return
    _orig.update(test_nb=nbdev.test.test_nb, run_all=CaptureShell.run_all, nbs_path=Path(get_config().nbs_path).resolve())
    nbdev.test.test_nb = _test_nb
    CaptureShell.run_all = _run_all

def run(files: list[Path], n_workers: int = 2) -> bool:
    "Test (and save) these notebooks exactly as nbdev_test does; True if all passed."
    install_hooks()
    import nbdev.test
    from fastcore.parallel import parallel
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    cfg = get_config()
    files = [Path(f).absolute() for f in sorted(files)]
    if not files: return True
    with working_directory(cfg.nbs_path):
        results = parallel(nbdev.test.test_nb, files, skip_flags=cfg.tst_flags.split(), force_flags=[],
                           n_workers=0 if len(files) == 1 else n_workers, basepath=cfg.config_path, pause=0.01)
    passed, times = zip(*results)
    for f, p, t in sorted(zip(files, passed, times), key=lambda o: -o[2]):
        print(f'{f.name}: {"ok" if p else "FAILED"} in {int(t)} s', flush=True)
    return all(passed)

if __name__ == '__main__':
    os.chdir(ROOT)
    import nbtest  # this file as an importable module, so worker processes can unpickle its functions
    nbtest.install_hooks()
    import nbdev.test
    sys.exit(nbdev.test.nbdev_test())
