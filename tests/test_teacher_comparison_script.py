"benchmarks/run_teacher_comparison.py: a resume that would mix two multimodal teachers is refused and changes no file."
import importlib.util
import shutil
from pathlib import Path

import pytest

from mmlit.core import ConfigError, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/"benchmarks/results/teacher_comparison/matbench_phonons"
TEACHER = ROOT/"benchmarks/results/contrastive_corpus/models/anchored_seed0"
SD = shared_data_dir()
pytestmark = pytest.mark.skipif(SD is None or not (SD/"matbench/matbench_phonons.csv.gz").exists()
                                or not (RESULTS/"multimodal-corpus-6e3cd9ac/results.json").exists(),
                                reason="shared matbench tables or the committed teacher runs not available")

def _script():
    spec = importlib.util.spec_from_file_location("run_teacher_comparison", ROOT/"benchmarks/run_teacher_comparison.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_other_teacher_is_refused_before_any_file_changes(tmp_path):
    # folds run with the lost teacher (weights 6e3cd9ac...) where the committed, rebuilt teacher would add a fold
    run = tmp_path/"matbench_phonons"/"multimodal-corpus"
    shutil.copytree(RESULTS/"multimodal-corpus-6e3cd9ac", run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ConfigError, match="teacher_version"):
        _script().main(["--tasks", "phonons", "--folds", "4", "--teachers", "multimodal", "--teacher-model", str(TEACHER),
                        "--suffix=-corpus", "--out", str(tmp_path)])
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert not (tmp_path/"matbench_phonons"/"teacher-corpus.json").exists()   # the teacher record is not rewritten either

def test_recorded_paths_are_relative_to_the_repository(tmp_path):
    rec = _script().recorded_path
    assert rec(TEACHER) == "benchmarks/results/contrastive_corpus/models/anchored_seed0"
    assert rec(tmp_path/"elsewhere") == str((tmp_path/"elsewhere").resolve())   # outside any mmlit checkout: absolute
