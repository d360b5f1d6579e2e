"""Shared fixtures: tiny hand-made lish-moa folders for the data-layer tests, small
simulated datasets (moakit's own simulator) for everything that trains, one pinned torch /
BLAS thread for every test and fixture (PINNED_THREADS), and the CLI helpers
(``from conftest import invoke, clean_exit``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
REAL_LABELS = REPO.parent / "shared" / "data" / "lish-moa-labels"


def write_tiny_folder(folder: Path, n_train: int = 40, n_test: int = 12, n_genes: int = 6, n_cells: int = 4,
                      seed: int = 0) -> Path:
    """A minimal valid lish-moa folder with few columns (fast to read and corrupt)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def features(n: int, prefix: str) -> pd.DataFrame:
        frame = pd.DataFrame({
            "sig_id": [f"id_{prefix}{i:05d}" for i in range(n)],
            "cp_type": np.where(np.arange(n) % 10 == 0, "ctl_vehicle", "trt_cp"),
            "cp_time": rng.choice([24, 48, 72], n),
            "cp_dose": rng.choice(["D1", "D2"], n),
        })
        for j in range(n_genes):
            frame[f"g-{j}"] = rng.normal(size=n).round(4)
        for j in range(n_cells):
            frame[f"c-{j}"] = rng.normal(size=n).round(4)
        return frame

    train = features(n_train, "tr")
    test = features(n_test, "te")
    train.to_csv(folder / "train_features.csv", index=False)
    test.to_csv(folder / "test_features.csv", index=False)
    scored = pd.DataFrame({"sig_id": train.sig_id})
    for name in ["target_a", "target_b", "target_c"]:
        scored[name] = (rng.random(n_train) < 0.3).astype(int)
    scored.loc[train.cp_type == "ctl_vehicle", ["target_a", "target_b", "target_c"]] = 0
    nonscored = pd.DataFrame({"sig_id": train.sig_id, "ns_a": (rng.random(n_train) < 0.2).astype(int), "ns_b": 0})
    drugs = pd.DataFrame({"sig_id": train.sig_id, "drug_id": [f"drug{i // 6:03d}" for i in range(n_train)]})
    scored.to_csv(folder / "train_targets_scored.csv", index=False)
    nonscored.to_csv(folder / "train_targets_nonscored.csv", index=False)
    drugs.to_csv(folder / "train_drug.csv", index=False)
    sub = pd.DataFrame({"sig_id": test.sig_id, "target_a": 0.5, "target_b": 0.5, "target_c": 0.5})
    sub.to_csv(folder / "sample_submission.csv", index=False)
    return folder


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return write_tiny_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def sim_folder(tmp_path_factory) -> Path:
    """A small simulated lish-moa folder (real target names, 772 genes, 100 cells)."""
    from moakit.data.simulate import simulate

    return simulate(tmp_path_factory.mktemp("sim") / "data", n_rows=1200, seed=3)


@pytest.fixture(scope="session")
def sim_data(sim_folder):
    from moakit.data.io import load

    return load(sim_folder)


# Every test, and every fixture of any scope, runs with this many torch intra-op and BLAS /
# OpenMP threads. The thread count changes float reduction order (results differ in the last
# bits, which training and iterative feature fits grow), so without a pin a test's numbers
# depended on what earlier tests in the same process left: numba's OpenMP pool, started by
# the first UMAP fit, resets torch's count to the core count. One thread is also the fastest
# for tiny networks on a busy machine (idle threads spin against each other). Torch's
# inter-op pool is left alone: it can be set once per process only, moakit never sets it,
# and it runs whole ops side by side without changing any reduction's order.
PINNED_THREADS = 1


@contextlib.contextmanager
def pinned_threads(threads: int = PINNED_THREADS):
    """torch.set_num_threads(threads) and threadpoolctl's limit on every BLAS / OpenMP
    library loaded by now; both restored afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    limits = threadpool_limits(limits=threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _threads_pinned_for_session():
    """Session and package fixtures (set up before any function fixture) run pinned too."""
    with pinned_threads():
        yield


@pytest.fixture(scope="module", autouse=True)
def _threads_pinned_for_module():
    """A module's fixtures (e.g. runs trained once per module) run pinned, whatever the
    modules before it left."""
    with pinned_threads():
        yield


@pytest.fixture(autouse=True)
def _threads_pinned():
    """Each test starts pinned, whatever an earlier test or fixture did, and leaves the
    count as it found it; set again per test because a library loaded since the session
    began (e.g. numba's OpenMP) is not under the session's limit."""
    with pinned_threads():
        yield


def invoke(*args):
    """Run the ``moakit`` CLI in-process with ``args`` (str() of each); stdout and stderr apart."""
    from typer.testing import CliRunner

    from moakit.cli import app

    try:
        cli = CliRunner(mix_stderr=False)  # click < 8.2: keep stderr apart
    except TypeError:
        cli = CliRunner()  # click >= 8.2: result.stdout and result.stderr are apart already
    return cli.invoke(app, [str(a) for a in args])


def clean_exit(res, codes=(1, 2)) -> str:
    """The command ended with a handled error: exit code 1/2, no traceback; its text."""
    text = res.stdout + res.stderr
    assert res.exit_code in codes, text
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in text
    return text


def gene_only_run(root: Path, n_rows: int) -> tuple[Path, Path]:
    """A simulated lish-moa folder without the cell block (g- columns only) and a
    ``simple_nn`` smoke run on it: (data folder, run folder)."""
    from moakit.data.simulate import simulate

    data = simulate(root / "data", n_rows=n_rows, seed=4, file_format="parquet")
    for name in ("train_features", "test_features"):
        frame = pd.read_parquet(data / f"{name}.parquet")
        frame.drop(columns=[c for c in frame.columns if c.startswith("c-")]).to_parquet(data / f"{name}.parquet")
    res = invoke("train", "simple_nn", "--data", data, "--out", root / "run", "--profile", "smoke", "--quiet")
    assert res.exit_code == 0, res.stdout + res.stderr
    return data, root / "run"
