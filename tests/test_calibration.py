"""Calibration of a blend as an option: per-target Platt / isotonic, fitted only on rows it is
not scored on, kept only when the nested score improves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moakit import blend, calibration
from moakit.evaluate import calibration_error


def _overconfident(n=3000, t=4, seed=0):
    """True probabilities q, labels y ~ Bernoulli(q), and predictions pushed away from the
    truth (logit x 2.5 - 1): ranking right, calibration wrong."""
    rng = np.random.default_rng(seed)
    q = 1 / (1 + np.exp(-rng.normal(-2.5, 1.2, (n, t))))
    y = (rng.random((n, t)) < q).astype(float)
    z = np.log(q) - np.log1p(-q)
    p = 1 / (1 + np.exp(-(2.5 * z - 1.0)))
    return q, y, p.astype(np.float32)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_cross_fit_improves_ece_of_a_miscalibrated_toy(method):
    _, y, p = _overconfident()
    ctl = np.zeros(len(y), bool)
    parts = np.arange(len(y)) % 5
    cal = calibration.cross_fit(p, y, ctl, parts, method)
    before = np.mean([calibration_error(y[:, j], p[:, j]) for j in range(y.shape[1])])
    after = np.mean([calibration_error(y[:, j], cal[:, j]) for j in range(y.shape[1])])
    assert after < 0.5 * before, (before, after)
    from moakit.metrics import mean_log_loss

    assert mean_log_loss(y, cal) < mean_log_loss(y, p)


def _spy(monkeypatch):
    """Record the rows (by their unique column-0 value) every calibrator is fitted on and applied to."""
    calls = {"fit": [], "apply": []}
    real_fit, real_apply = calibration.fit, calibration.apply

    def fit(pred, y, rows, method):
        calls["fit"].append(set(np.round(np.asarray(pred)[np.asarray(rows, bool), 0], 7)))
        return real_fit(pred, y, rows, method)

    def apply(cals, pred, is_control=None):
        calls["apply"].append(set(np.round(np.asarray(pred)[:, 0], 7)))
        return real_apply(cals, pred, is_control)

    monkeypatch.setattr(calibration, "fit", fit)
    monkeypatch.setattr(calibration, "apply", apply)
    return calls


def test_no_row_is_calibrated_by_a_calibrator_fitted_on_it(monkeypatch):
    _, y, p = _overconfident(n=500, t=2)
    p[:, 0] = np.linspace(0.01, 0.99, len(p))  # a unique value per row identifies it
    calls = _spy(monkeypatch)
    calibration.cross_fit(p, y, np.zeros(len(y), bool), np.arange(len(y)) % 4, "platt")
    assert len(calls["fit"]) == len(calls["apply"]) == 4
    for fitted, applied in zip(calls["fit"], calls["apply"]):
        assert fitted and applied and not fitted & applied
    assert set().union(*calls["apply"]) == set(np.round(p[:, 0], 7))


def test_nested_evaluation_calibrates_inside_the_scheme(monkeypatch):
    """Inside the nested scheme too: part k's blend is calibrated by a calibrator fitted on
    the other parts only (a preset weight of 1 keeps each row's value as its identity)."""
    _, y, p = _overconfident(n=600, t=3)
    p[:, 0] = np.linspace(0.01, 0.99, len(p))
    ctl = np.zeros(len(y), bool)
    calls = _spy(monkeypatch)
    res = blend.nested_evaluation([p, p[::-1].copy()], y, ctl, methods=[], n_folds=3, per_target=False,
                                  preset=np.array([1.0, 0.0]), calibrate="isotonic")
    assert len(calls["fit"]) == 3
    for fitted, applied in zip(calls["fit"], calls["apply"]):
        assert fitted and applied and not fitted & applied
    assert "calibrated" in res["methods"]["preset"] and "calibrated" not in res["methods"]["best_single"]


def _runs(tmp_path, overconfident: bool):
    """Two fake model runs over a tiny data folder whose predictions are (or are not) miscalibrated."""
    from conftest import write_tiny_folder
    from moakit.data.io import load
    from test_blend import write_fake_run

    data_dir = write_tiny_folder(tmp_path / "data", n_train=600, n_test=30)
    data = load(data_dir)
    rng = np.random.default_rng(3)
    y, ctl = data.train.scored.astype(float), data.train.is_control
    runs = []
    for name in "ab":
        base = np.clip(np.where(y > 0, 0.45, 0.25) + rng.normal(0, 0.08, y.shape), 0.01, 0.99)
        if overconfident:
            z = np.log(base) - np.log1p(-base)
            base = 1 / (1 + np.exp(-(4 * z + 2)))
        base[ctl] = 0
        test = rng.random((len(data.test), y.shape[1])) * 0.5
        test[data.test.is_control] = 0
        runs.append(write_fake_run(tmp_path / "runs" / name, data.train.sig_id, data.test.sig_id, base, test,
                                   list(data.train.scored_names), data_source=str(data_dir), y=y, ctl=ctl))
    return runs, data


def test_blend_keeps_calibration_only_when_the_nested_score_improves(tmp_path):
    runs, data = _runs(tmp_path, overconfident=True)
    res = blend.blend_runs(runs, tmp_path / "cal", methods=["slsqp"], data=data, calibrate="platt", nested_folds=3)
    cal = json.loads((tmp_path / "cal" / "blend.json").read_text())["calibration"]
    assert cal["method"] == "platt" and cal["kept"] is True
    assert cal["nested_log_loss"]["on"] < cal["nested_log_loss"]["off"]
    assert (tmp_path / "cal" / "calibration.json").exists()
    plain = blend.blend_runs(runs, tmp_path / "plain", methods=["slsqp"], data=data, nested_folds=3)
    assert res.log_loss < plain.log_loss  # the cross-fitted calibrated OOF is written and scored
    assert not np.allclose(res.test, plain.test)
    again = blend.apply_saved_calibration(tmp_path / "cal", plain.test, list(data.train.scored_names))
    assert np.allclose(again[~data.test.is_control], res.test[~data.test.is_control], atol=1e-6)
    # A calibration that does not help is recorded and dropped (the stale file with it).
    good, _ = _runs(tmp_path / "good", overconfident=False)
    res2 = blend.blend_runs(good, tmp_path / "cal", methods=["slsqp"], data=data, calibrate="isotonic",
                            nested_folds=3)
    cal2 = res2.summary["calibration"]
    assert cal2["kept"] is (cal2["nested_log_loss"]["on"] < cal2["nested_log_loss"]["off"])
    if not cal2["kept"]:
        assert not (tmp_path / "cal" / "calibration.json").exists()


def test_cli_blend_calibrate(tmp_path):
    from typer.testing import CliRunner

    from moakit.cli import app

    runs, _ = _runs(tmp_path, overconfident=True)
    out = tmp_path / "b"
    result = CliRunner().invoke(app, ["blend", *map(str, runs), "--out", str(out), "--calibrate", "platt",
                                      "--method", "slsqp", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["calibration"]["kept"] is True and set(doc["calibration"]["nested_log_loss"]) == {"on", "off"}
    bad = CliRunner().invoke(app, ["blend", str(runs[0]), "--out", str(out), "--calibrate", "beta"])
    assert bad.exit_code == 2
