"""The learned residual of a measured host (hwmodels/residual.py): the tree evaluator against hand
walks, where it applies and where not, and the export from scikit-learn against the library's own
prediction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import hwmodels
import hwmodels.cpu as cpu
from hwmodels import residual
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import Unstructured

KERNELS = ("cpu_csr", "cpu_bitmap")


def _ensemble(baseline: float = 0.1) -> dict:
    """Two trees. Tree 1 splits on log_m (feature 1) at log(100): left leaf +0.2, right leaf -0.1.
    Tree 2 splits on density (feature 4) at 0.25, then its right child on kernel (feature 0) at 0.5:
    leaves -0.05 (d <= 0.25), +0.03 (csr), +0.07 (bitmap)."""
    return {"features": list(residual.FEATURES), "kernels": list(KERNELS), "baseline": baseline,
            "trees": [{"feature": [1, 0, 0], "threshold": [math.log(100.0), 0.0, 0.0], "left": [1, -1, -1],
                       "right": [2, -1, -1], "value": [0.0, 0.2, -0.1]},
                      {"feature": [4, 0, 0, 0, 0], "threshold": [0.25, 0.0, 0.5, 0.0, 0.0], "left": [1, -1, 3, -1, -1],
                       "right": [2, -1, 4, -1, -1], "value": [0.0, -0.05, 0.0, 0.03, 0.07]}]}


def _x(kernel: int, m: float, d: float) -> list[float]:
    x = [0.0] * len(residual.FEATURES)
    x[0], x[1], x[4] = float(kernel), math.log(m), d
    return x


def test_tree_walk_by_hand():
    ens = residual.Ensemble(_ensemble())
    assert ens.predict(_x(0, 49, 0.1)) == pytest.approx(0.1 + 0.2 - 0.05)
    assert ens.predict(_x(0, 196, 0.5)) == pytest.approx(0.1 - 0.1 + 0.03)
    assert ens.predict(_x(1, 196, 0.5)) == pytest.approx(0.1 - 0.1 + 0.07)
    assert ens.predict(_x(1, 100, 0.25)) == pytest.approx(0.1 + 0.2 - 0.05)  # on a threshold: left


def test_a_file_for_other_features_is_refused():
    bad = {**_ensemble(), "features": ["log_m"]}
    with pytest.raises(ValueError, match="residual file features"):
        residual.Ensemble(bad)


@pytest.fixture
def spec_with(tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps(_ensemble()))
    residual.load.cache_clear()
    yield hwmodels.load("host").replace(residual_file=str(path))
    residual.load.cache_clear()


def test_correction_multiplies_the_analytic_time(spec_with):
    op = Op.gemm(196, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_bitmap", tile=(196, 64, 128), params={"threads": 1})
    plain = cpu.cost(op, mp, spec_with.replace(residual_file=""))
    got = cpu.cost(op, mp, spec_with)
    factor = math.exp(0.1 - 0.1 + 0.07)  # bitmap, 196 pixels, d = 0.5
    assert got.t_s == pytest.approx(plain.t_s * factor, rel=1e-12)
    assert got.cycles == pytest.approx(plain.cycles * factor, rel=1e-12)
    assert got.breakdown_s["residual"] == pytest.approx(got.t_s - plain.t_s, rel=1e-12)
    assert got.breakdown_s["core"] == plain.breakdown_s["core"]  # the analytic parts stay as they were


def test_correction_only_where_it_was_trained(spec_with):
    op = Op.gemm(196, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_dense_gemm", params={"threads": 1})  # not among the file's kernels
    assert cpu.cost(op, mp, spec_with).t_s == cpu.cost(op, mp, spec_with.replace(residual_file="")).t_s
    # a spec that names no file: the analytic model alone
    assert "residual" not in cpu.cost(op, mp, hwmodels.load("snapdragon-835")).breakdown_s


def test_missing_file_names_the_field():
    residual.load.cache_clear()
    spec = hwmodels.load("host").replace(residual_file="no-such-file.json")
    op = Op.gemm(64, 64, 64, dtype="fp32", weight=Unstructured(0.5))
    with pytest.raises(FileNotFoundError, match="residual_file"):
        cpu.cost(op, Mapping("cpu_csr", tile=(64, 64, 64), params={"threads": 1}), spec)
    residual.load.cache_clear()


def test_the_host_file_covers_the_measured_kernels():
    ens = residual.load(hwmodels.load("host").residual_file)
    assert set(ens.kernels) == {"cpu_csr", "cpu_bsr", "cpu_bitmap", "cpu_nm", "cpu_dense_gemm", "cpu_act_gemv"}
    assert "fit-half rows" in ens.source


def test_export_reproduces_scikit_learn(tmp_path):
    pytest.importorskip("sklearn")
    from simsparse import calibrate_cpu as cc

    # synthetic "measurements": the analytic time of random CSR / bitmap calls times a known shape effect
    rng = np.random.default_rng(0)
    spec = hwmodels.load("host").replace(residual_file="")
    rows = []
    for i in range(300):
        m, n, k = int(rng.choice([16, 49, 196, 784])), int(rng.integers(32, 512)), int(rng.integers(32, 512))
        d = float(rng.choice([0.05, 0.1, 0.2, 0.5]))
        kern = ("cpu_csr", "cpu_bitmap")[i % 2]
        row = {"kernel": kern, "m": m, "n": n, "k": k, "dtype": "fp32", "activation_density": 1.0,
               "weight": {"pattern": "unstructured", "density": d}, "split": "fit", "campaign": "c",
               "mapping": {"kernel": kern, "tile": [m, n, k], "threads": 1}, "rotation_copies": 0}
        op, mp = cc.row_op(row), cc.row_mapping(row)
        row["t_median_s"] = cpu.cost(op, mp, spec).t_s * (1.3 if m <= 49 else 0.9)
        rows.append(row)
    data = cc.fit_residual(rows, spec, None, {"max_leaf_nodes": 7, "max_depth": None, "learning_rate": 0.3,
                                              "max_iter": 60, "min_samples_leaf": 5, "l2_regularization": 0.0})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    residual.load.cache_clear()
    learned = spec.replace(residual_file=str(path))
    pred = cc.predict(rows, learned)
    truth = np.array([r["t_median_s"] for r in rows])
    # the shape effect (x 1.3 at <= 49 pixels, x 0.9 above) is learned from the features: absolute-error
    # boosting leaves a few rows of a leaf that mixes both groups off (3 of 300 at 8 % with the tail feature)
    err = np.abs(pred / truth - 1)
    assert np.median(err) < 0.005 and np.mean(err < 0.02) >= 0.98 and err.max() < 0.1
    residual.load.cache_clear()


def test_host_correction_stays_a_correction_on_cold_calls():
    # trained on the harness's rotated calls; a user's call (no rotation: operands cold) lies outside that
    # range of one feature. The trees then answer from their edge leaves: the factor must stay a modest
    # correction of the analytic time (measured range over this grid: 0.85-1.22), never a new model
    import mappers

    host = hwmodels.load("host")
    bare = host.replace(residual_file="")
    factors = []
    for m in (16, 196, 3136):
        for n, k in ((64, 1024), (1024, 256), (4096, 4096)):
            for d in (0.02, 0.1, 0.5):
                op = Op.gemm(m, n, k, dtype="fp32", weight=Unstructured(d))
                for kern in ("cpu_csr", "cpu_bitmap"):
                    mp = mappers.candidates(op, host, kern)[0]
                    factors.append(cpu.cost(op, mp, host).t_s / cpu.cost(op, mp, bare).t_s)
    assert 0.7 <= min(factors) and max(factors) <= 1.4


def test_a_residual_of_another_analytic_fit_is_refused(tmp_path):
    # the file records the analytic values it was trained on; a refit spec must not reuse it silently
    host = hwmodels.load("host")
    data = {**_ensemble(), "analytic_params": {"numba.c_vec": host.efficiency["numba.c_vec"]}}
    path = tmp_path / "res.json"
    path.write_text(json.dumps(data))
    residual.load.cache_clear()
    op = Op.gemm(196, 64, 128, dtype="fp32", weight=Unstructured(0.5))
    mp = Mapping("cpu_csr", tile=(196, 64, 128), params={"threads": 1})
    cpu.cost(op, mp, host.replace(residual_file=str(path)))  # the same fit: accepted
    refit = host.replace(residual_file=str(path), efficiency={**host.efficiency, "numba.c_vec": 9.0})
    with pytest.raises(ValueError, match="numba.c_vec"):
        cpu.cost(op, mp, refit)
    residual.load.cache_clear()


def test_the_host_file_matches_the_host_fit():
    host = hwmodels.load("host")
    ens = residual.load(host.residual_file)
    assert ens.analytic  # it records the fit it corrects
    ens.check(host)  # and the committed spec is that fit


def _rows(shapes, kernels=("cpu_dense_gemm", "cpu_csr"), campaign="c"):
    rows = []
    for m, n, k in shapes:
        for kern in kernels:
            rows.append({"kernel": kern, "m": m, "n": n, "k": k, "dtype": "fp32", "activation_density": 1.0,
                         "weight": {"pattern": "unstructured", "density": 1.0 if kern == "cpu_dense_gemm" else 0.1},
                         "split": "fit", "campaign": campaign, "t_median_s": 1e-3,
                         "mapping": {"kernel": kern, "tile": [m, n, k], "threads": 1}, "rotation_copies": 0})
    return rows


def test_a_shape_falls_in_one_cross_validation_group():
    from simsparse import calibrate_cpu as cc

    # every M, kernel and campaign of one (N, K) lands in the same group, so no group is scored on a
    # shape its fit saw under another M or kernel
    rows = _rows([(m, 256, 64) for m in (16, 196, 3136)]) + _rows([(49, 256, 64)], campaign="other")
    assert len({cc.shape_fold(r) for r in rows}) == 1
    many = _rows([(49, n, k) for n in range(16, 400, 8) for k in (32, 64)], kernels=("cpu_csr",))
    assert {cc.shape_fold(r) for r in many} == set(range(cc.CV_FOLDS))


def test_cross_fitted_table_prices_a_row_by_the_fit_that_left_its_shape_out():
    from simsparse import calibrate_cpu as cc

    rows = _rows([(196, n, 128) for n in range(64, 640, 48)])
    # five folds whose dense GEMM efficiencies differ: a row's time must be its own group's fold's
    fits = [{"fold": f, "params": {"gemm.eff": 0.3 + 0.1 * f}, "states": {}} for f in range(cc.CV_FOLDS)]
    X, t = cc.oof_table(rows, "host", fits, state=False)
    assert X.shape == (len(rows), len(residual.FEATURES))
    for r, tr in zip(rows, t, strict=True):
        f = cc.shape_fold(r)
        spec = cc.fold_spec("host", fits[f], state=False)
        assert tr == pytest.approx(cpu.cost(cc.row_op(r), cc.row_mapping(r), spec).t_s, rel=1e-12)
    dense = [(cc.shape_fold(r), tr, r["n"]) for r, tr in zip(rows, t, strict=True) if r["kernel"] == "cpu_dense_gemm"]
    # a compute-bound GEMM: time per FLOP falls as the fold's efficiency rises
    per_flop = {}
    for f, tr, n in dense:
        per_flop.setdefault(f, []).append(tr / n)
    means = [np.mean(per_flop[f]) for f in sorted(per_flop)]
    assert len(means) >= 3 and all(a > b for a, b in zip(means, means[1:], strict=False))


def test_a_row_without_its_campaigns_state_in_the_fold_gets_no_cross_fitted_price():
    from simsparse import calibrate_cpu as cc

    # a campaign whose fit-half shapes all fell in one group has no state in the fold that leaves it out
    rows = _rows([(196, 64, 128)], campaign="late") + _rows([(196, 64, 128)], campaign="early")
    fits = [{"fold": f, "params": {}, "states": {"early": {"core_speed": 1.0}}} for f in range(cc.CV_FOLDS)]
    _, t = cc.oof_table(rows, "host", fits, state=True)
    late = np.array([r["campaign"] == "late" for r in rows])
    assert np.isnan(t[late]).all() and np.isfinite(t[~late]).all() and (t[~late] > 0).all()
