"""Explanations: the simulator's planted truth, the torch feature pipeline, Integrated
Gradients and permutation importance recovering planted genes, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clean_exit, invoke

import moakit
from moakit import explain as ex
from moakit.data import io, schema
from moakit.data.simulate import N_DIRECT_GENES, simulate
from moakit.features.differentiable import TorchPipeline, replay_numpy
from moakit.features.pipeline import Pipeline, blocks_from_dataset

# sha256 over (path, sha256 of the bytes) of every file of simulate(n_rows=200, seed=7) but
# answers/signatures.npz, computed with the simulator before it wrote signatures (git HEAD
# 6f979cc): writing the truth changes no other byte and no random draw.
BEFORE = {"csv": "d160c56eb996ba05d7f0da4f88cb4c9c2bb5321085f6af912e3af981472079c3",
          "parquet": "5de725a3f267626fb82e6eadeff232af9ddd8979fa942c920f9b21dd51ba2b11"}
CHANCE = N_DIRECT_GENES / schema.N_GENES  # a random top-20 list: 15 / 772 = 1.9% planted genes


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "signatures.npz":
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_simulator_writes_the_truth_and_nothing_else_changes(tmp_path, fmt):
    folder = simulate(tmp_path / "d", n_rows=200, seed=7, file_format=fmt)
    assert digest(folder) == BEFORE[fmt]
    z = np.load(folder / "answers" / "signatures.npz")
    assert list(z["targets"]) == schema.scored_target_names() and list(z["gene_columns"]) == schema.GENE_COLUMNS
    assert z["direct"].shape == z["total"].shape == (206, 772) and z["direct_genes"].shape == (206, N_DIRECT_GENES)
    for t in range(206):  # the directly hit genes are exactly the nonzero direct entries
        assert list(np.flatnonzero(z["direct"][t])) == list(z["direct_genes"][t])
    assert (z["strength"] > 0).all() and z["toxicity"].shape == (206,)


def test_planted_signature_is_what_the_profiles_show(tmp_path):
    """A strong target's treated rows differ from the controls along its planted signature."""
    folder = simulate(tmp_path / "d", n_rows=1500, seed=2)
    d = io.load(folder)
    z = np.load(folder / "answers" / "signatures.npz")
    ctl = d.train.genes[d.train.is_control].mean(axis=0)
    counts = d.train.scored.sum(axis=0)
    strong = [t for t in np.argsort(-z["strength"]) if counts[t] >= 6][:5]
    best = 0
    for t in strong:  # (a drug may be inert: 12% are, so not every target shows)
        shift = d.train.genes[d.train.scored[:, t] > 0].mean(axis=0) - ctl
        rho = [np.corrcoef(shift, z["total"][u])[0, 1] for u in range(len(z["total"]))]
        best += int(np.argmax(rho) == t and rho[t] > 0.3)
    assert best >= 4  # measured: 4 of 5 (rho 0.71-0.91, each its own target's best match)


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Simple NN (smoke features, 128-wide, 15 epochs) on 1,500 simulated rows."""
    root = tmp_path_factory.mktemp("explain")
    folder = simulate(root / "data", n_rows=1500, seed=0)
    data = moakit.load_dataset(folder)
    model = moakit.MoAModel("simple_nn", profile="smoke", run_dir=root / "run",
                            params={"train": {"epochs": 15}, "network": {"hidden": [128, 128]}})
    model.fit(**data.fit_args)
    d = io.load(folder)
    y = io.read_answers(folder / "answers" / "test_targets_scored.csv", d.test.sig_id, d.train.scored_names)
    z = np.load(folder / "answers" / "signatures.npz")
    # the strongest planted gene signatures (not cytotoxic: those act through the cell lines and a
    # stress response as much as through their planted genes) with unseen-drug test positives and
    # 6+ training positives
    ok = np.flatnonzero((y.sum(axis=0) > 0) & (d.train.scored.sum(axis=0) >= 6) & (z["toxicity"] == 0))
    strong = ok[np.argsort(-z["strength"][ok])][:3]
    return {"folder": folder, "model": model, "run": ex.open_run(root / "run"), "d": d, "y": y, "z": z,
            "strong": strong, "data": data}


def precision_at_20(result: dict, planted) -> float:
    genes = [int(r["column"][2:]) for r in result["top"] if r["kind"] == "gene"][:20]
    return len(set(genes) & set(int(g) for g in planted)) / 20


def test_torch_pipeline_equals_numpy(trained):
    """The torch replay of every fitted step equals Pipeline.transform (k-means held at its value)."""
    pipe = trained["run"].models[0].features[(0, 0)]
    assert isinstance(pipe, Pipeline)
    tp = TorchPipeline(pipe)
    assert tp.held_constant == ["km_g (kmeans_onehot)", "km_c (kmeans_onehot)"]
    for ds in (trained["d"].train, trained["d"].test):
        blocks = blocks_from_dataset(ds)
        X, consts = replay_numpy(pipe, blocks, tp.constant_keys)
        assert np.array_equal(X, pipe.transform(blocks))
        with torch.no_grad():
            Xt = tp({k: torch.as_tensor(v) for k, v in blocks.items()},
                    {k: torch.as_tensor(v) for k, v in consts.items()}).numpy()
        scale = np.maximum(1.0, np.abs(X))
        assert np.max(np.abs(Xt - X) / scale) < 1e-4  # float32 rounding (measured: 4e-5)


def test_loaded_run_predicts_as_inference(trained):
    from moakit.inference import predict_arrays

    d, run = trained["d"], trained["run"]
    _, pred, _ = predict_arrays(run.run_dir, d.test)
    t = int(trained["strong"][0])
    mine = np.where(d.test.is_control, 0.0, run.predict(d.test, t))
    assert np.abs(mine - pred[:, t]).max() < 1e-6


def test_integrated_gradients_find_planted_genes(trained):
    """IG's top-20 genes hold planted (directly hit) genes far above chance (15 / 772)."""
    d, z, y = trained["d"], trained["z"], trained["y"]
    precisions = []
    for t in trained["strong"]:
        name = d.train.scored_names[t]
        r = ex.explain(trained["run"], name, d.test, y, reference=d.train, method="ig", top=20, deletion=False)
        precisions.append(precision_at_20(r, z["direct_genes"][t]))
        # completeness: the attributions add up to most of f(x) - f(baseline). The rest (measured: 8%
        # and 26% of the gap) does not shrink with more steps (1,024 Riemann steps: the same) and is
        # larger for rows with many values in the quantile transforms' outer bins, where the normal
        # output is steepest; its cause is not fully established.
        assert r["completeness"]["mean_abs_error"] < 0.4 * r["completeness"]["mean_abs_gap"] + 1e-4
        assert r["held_constant"] == ["km_c (kmeans_onehot)", "km_g (kmeans_onehot)"]
        assert r["stability"]["folds"]["n"] == 3 and r["stability"]["seeds"] is None
    # measured: 0.20, 0.25, 0.25 (10-13x chance)
    assert np.mean(precisions) >= 5 * CHANCE and max(precisions) >= 0.15, precisions


def test_permutation_importance_finds_planted_genes(trained):
    d, z, y = trained["d"], trained["z"], trained["y"]
    t = int(trained["strong"][0])
    r = ex.explain(trained["run"], d.train.scored_names[t], d.test, y, reference=d.train, method="permutation",
                   top=20, n_repeats=1, negatives=20)
    assert r["rows_predicted"] == (1 + r["n_columns"]) * (int(y[~d.test.is_control, t].sum()) + 20)
    # measured: 0.20 (10x chance)
    assert precision_at_20(r, z["direct_genes"][t]) >= 5 * CHANCE
    dl = r["deletion"]  # faithfulness: deleting the top columns hurts more than random ones
    assert dl["metric"] == "log_loss" and dl["top"][-1] > dl["random"][-1]


def test_api_explain_and_errors(trained):
    model, data = trained["model"], trained["data"]
    name = trained["d"].train.scored_names[int(trained["strong"][0])]
    r = model.explain(data.X_test, name, top=5, n_steps=8, max_rows=4)
    assert len(r["top"]) == 5 and r["rows_explained"].endswith("highest predicted probability")
    assert r["top"][0]["kind"] in ("gene", "cell", "treatment")
    with pytest.raises(ex.ExplainError, match="did you mean"):
        model.explain(data.X_test, name[:-1] + "x")
    with pytest.raises(ex.ExplainError, match="needs held-out labelled rows"):
        model.explain(data.X_test, name, method="permutation")


def test_cli_json(trained, tmp_path):
    run_dir = trained["run"].run_dir
    name = trained["d"].train.scored_names[int(trained["strong"][0])]
    res = invoke("explain", run_dir, "--target", name, "--data", trained["folder"], "--top", "10",
                 "--steps", "8", "--rows", "4", "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    for key in ("target", "method", "top", "stability", "deletion", "held_constant", "baseline", "seconds",
                "held_out", "saved", "completeness"):
        assert key in out, key
    assert out["method"] == "ig" and len(out["top"]) == 10 and out["n_columns"] == 772 + 100 + 2
    assert "unseen" in out["held_out"] and "control rows" in out["baseline"]
    genes = [r for r in out["top"] if r["kind"] == "gene"]
    assert all(r["entrez_id"].isdigit() for r in genes)  # lish-moa columns named by Entrez id
    saved = Path(out["saved"])
    assert saved == run_dir / "explain" / f"{name}.ig.json" and json.loads(saved.read_text())["target"] == name
    assert ex.load_saved(run_dir)[0]["target"] == name
    bad = invoke("explain", run_dir, "--target", "no_such_moa", "--data", trained["folder"])
    assert bad.exit_code == 1 and "unknown target" in clean_exit(bad)
    both = invoke("explain", run_dir, "--target", name, "--data", trained["folder"],
                  "--features", trained["folder"] / "test_features.csv")
    assert both.exit_code == 2 and "not both" in clean_exit(both)


def test_report_section(trained, tmp_path):
    from moakit.report import write_report

    run_dir = trained["run"].run_dir
    name = trained["d"].train.scored_names[int(trained["strong"][1])]
    d, y = trained["d"], trained["y"]
    r = ex.explain(trained["run"], name, d.test, y, reference=d.train, top=10, n_steps=8, max_rows=4)
    ex.save(r, run_dir)
    out = write_report(run_dir, tmp_path / "report", data=trained["folder"])
    html = (out / "index.html").read_text() if out.is_dir() else out.read_text()
    assert "Which genes drive a call" in html and name in html
    folder = out if out.is_dir() else out.parent
    assert (folder / f"deletion_{name}_ig.png").exists()
