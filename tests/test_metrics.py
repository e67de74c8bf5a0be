"Property tests of the metrics, and checks of the benchmark records against matbench itself and its leaderboard."
import json, math
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm

from mmlit.core import shared_data_dir
from mmlit.metrics import mae, rmse, mad, mad_mae, mae_mad, rmse_rmsd, roc_auc, regression_scores

floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
pairs = st.integers(2, 40).flatmap(lambda n: st.tuples(arrays(float, n, elements=floats), arrays(float, n, elements=floats)))


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_against_sklearn_and_identities(tp):
    t, p = tp
    assert math.isclose(mae(t, p), skm.mean_absolute_error(t, p), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(rmse(t, p), math.sqrt(skm.mean_squared_error(t, p)), rel_tol=1e-9, abs_tol=1e-9)
    assert mae(t, p) <= rmse(t, p) + 1e-9
    if mad(t) > 1e-6 and mae(t, p) > 1e-6:
        assert math.isclose(mad_mae(t, p) * mae_mad(t, p), 1.0, rel_tol=1e-9)
        assert math.isclose(1 - rmse_rmsd(t, p)**2, skm.r2_score(t, p), rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=40, deadline=None)
@given(pairs, st.floats(0.1, 100), st.floats(-100, 100))
def test_ratios_are_unit_free(tp, scale, shift):
    "MAD:MAE and RMSE/RMSD do not change when targets and predictions are rescaled and shifted together."
    t, p = tp
    if mad(t) < 1e-3 or mae(t, p) < 1e-3: return
    assert math.isclose(mad_mae(t, p), mad_mae(t*scale + shift, p*scale + shift), rel_tol=1e-6)
    assert math.isclose(rmse_rmsd(t, p), rmse_rmsd(t*scale + shift, p*scale + shift), rel_tol=1e-6)


@settings(max_examples=40, deadline=None)
@given(arrays(float, st.integers(2, 30), elements=floats))
def test_mean_predictor_scores_one(t):
    if mad(t) < 1e-6: return
    assert math.isclose(mad_mae(t, np.full_like(t, t.mean())), 1.0, rel_tol=1e-9)


def test_roc_auc_matches_sklearn():
    rng = np.random.default_rng(0); y = rng.integers(0, 2, 200); s = y + rng.normal(0, 1, 200)
    assert math.isclose(roc_auc(y, s), skm.roc_auc_score(y, s))
    assert regression_scores([1., 2., 3.], [1., 2., 4.])["max_error"] == 1.0


needs_data = pytest.mark.skipif(shared_data_dir() is None or not (shared_data_dir()/"matbench/matbench_expt_gap.csv.gz").exists(),
                                reason="shared matbench data not available")


@needs_data
def test_mean_predictor_reproduces_leaderboard_dummy():
    "Our folds + protocol + std convention reproduce matbench's published Dummy row exactly."
    from mmlit.data.external import load_matbench
    from mmlit.bench.core import run_matbench, make_model, load_leaderboard
    lb = load_leaderboard()
    if lb is None: pytest.skip("leaderboard table not available")
    res = run_matbench(load_matbench("expt_gap"), lambda: make_model("mean"), progress=False)
    row = lb[(lb.task == "matbench_expt_gap") & (lb.algorithm == "Dummy")].iloc[0]
    assert abs(res.mean() - row["mean"]) < 5e-5 and abs(res.std() - row["std"]) < 5e-5


@needs_data
def test_matbench_file_validates_with_matbench():
    "matbench itself (if installed) accepts our MatbenchBenchmark dict: ids, score keys and hash."
    bench = pytest.importorskip("matbench.bench")
    from mmlit.data.external import load_matbench
    from mmlit.bench.core import run_matbench, make_model
    res = run_matbench(load_matbench("expt_gap"), lambda: make_model("mean"), progress=False)
    mb = bench.MatbenchBenchmark.from_dict(json.loads(json.dumps(res.to_matbench())))
    assert mb.is_valid
    assert math.isclose(mb.matbench_expt_gap.scores["mae"]["mean"], res.mean(), rel_tol=1e-9)
