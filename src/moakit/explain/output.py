"""What an explanation reads (the rows and labels) and writes (RUN/explain/*.json, the text
summary, the deletion-curve plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moakit.data.dataset import Dataset
from moakit.explain.loaded import ExplainError, LoadedRun
from moakit.runs import layout, records


# ----------------------------------------------------------------------------- inputs and output


@dataclass
class Inputs:
    """What an explanation reads: the rows (``ds``), their labels of the run's targets
    (``y``, None when unknown), the baseline's reference rows, and what the rows are."""

    ds: Dataset
    y: np.ndarray | None
    reference: Dataset
    note: str
    gene_info: object = None


def load_inputs(run: LoadedRun, data: str | Path | None = None, features: str | Path | None = None,
                labels: str | Path | None = None) -> Inputs:
    """The rows to explain. ``data``: a dataset folder: its test split with the labels of
    ``answers/`` (drugs unseen in training) when present, else its training rows; the
    baseline comes from its control rows. ``features`` (+ optional ``labels``): a features
    table. Neither: the data folder the run's manifest records."""
    from moakit.data import io

    if data is None and features is None:
        data = _recorded_data(run.run_dir)
    if features is not None:
        ds = io.read_features(features)
        y = io.read_answers(labels, ds.sig_id, run.scored) if labels is not None else None
        info = _gene_info(Path(features).parent, ds)
        note = f"{features}" + (f" with labels {labels}" if labels is not None else " (no labels)")
        return Inputs(ds, y, ds, note, info)
    folder = Path(data)
    moa = io.load(folder)
    answers = records.find_test_answers(folder)
    if answers is not None and len(moa.test):
        y = io.read_answers(answers, moa.test.sig_id, run.scored)
        return Inputs(moa.test, y, moa.train, f"{folder}: test rows with answers/ (drugs unseen in training)",
                      getattr(moa, "genes", None))
    if moa.train.scored_names != run.scored:
        raise ExplainError(f"{folder}: its targets differ from the run's")
    return Inputs(moa.train, moa.train.scored, moa.train,
                  f"{folder}: TRAINING rows (no answers/ folder: not held out)", getattr(moa, "genes", None))


def _recorded_data(run_dir: Path) -> Path:
    from moakit.manifest import MANIFEST_FILE
    from moakit.artifacts import read_json

    path = run_dir / MANIFEST_FILE
    source = read_json(path).get("data_source") if path.exists() else None
    if not source or not Path(source).is_dir():
        raise ExplainError(f"{run_dir}: give the rows to explain with --data DIR or --features FILE "
                           "(the run records no data folder that still exists)")
    return Path(source)


def _gene_info(folder: Path, ds: Dataset):
    from moakit.data import io

    reader = getattr(io, "read_gene_info", None)
    try:
        return reader(folder, list(ds.gene_names)) if reader is not None else None
    except (io.DataError, OSError):
        return None


def output_path(run_dir: str | Path, target: str, method: str) -> Path:
    """RUN/explain/<target>.<method>.json."""
    return layout.explain_file(run_dir, target, method)


def save(result: dict, run_dir: str | Path) -> Path:
    """Write ``result`` as JSON under the run folder (atomically)."""
    from moakit.artifacts import write_json

    path = output_path(run_dir, result["target"], result["method"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return path


def load_saved(run_dir: str | Path) -> list[dict]:
    """Every saved explanation of a run (RUN/explain/*.json), by target then method."""
    folder = layout.explain_dir(run_dir)
    out = []
    for path in sorted(folder.glob(layout.EXPLAIN_GLOB)) if folder.is_dir() else []:
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and "target" in obj and "top" in obj:
            out.append(obj)
    return out


def summary_lines(result: dict, top: int = 20) -> list[str]:
    """A short text summary: what was explained, cost, stability, the top columns."""
    lines = [f"{result['target']}: {result['method']} on {result['rows_explained']} ({result['held_out']}); "
             f"baseline {result['baseline']}; {result['seconds']:.1f} s"]
    if result.get("held_constant"):
        lines.append(f"held constant (not differentiable): {', '.join(result['held_constant'])}")
    st = result.get("stability") or {}
    for what in ("folds", "seeds"):
        if st.get(what):
            lines.append(f"stability across {what}: Spearman {st[what]['spearman']:.2f}, "
                         f"top-20 overlap {st[what]['top20_overlap']:.0%} ({st[what]['n']})")
    dl = result.get("deletion")
    if dl:
        lines.append(f"deletion ({dl['metric']}), k = {dl['k'][-1]}: top {dl['top'][-1]:.4f} vs random "
                     f"{dl['random'][-1]:.4f} (none {dl['top'][0]:.4f})")
    for row in result["top"][:top]:
        name = row.get("symbol") or row.get("ccle_name") or ""
        ident = f"entrez {row['entrez_id']}" if "entrez_id" in row else ""
        lines.append(f"{row['rank']:>4}  {row['column']:<10} {row['kind']:<9} {ident:<14} {name:<28} "
                     f"{row['score']:+.3g}")
    return lines


def plot_deletion(result: dict, path: str | Path) -> bool:
    """The deletion curve of a saved explanation as a PNG (False when it has none)."""
    dl = result.get("deletion")
    if not dl:
        return False
    from matplotlib.figure import Figure  # pyplot-free: no global state, no backend change

    fig = Figure(figsize=(4.2, 2.8), dpi=100)
    ax = fig.add_subplot()
    x = np.maximum(np.asarray(dl["k"], float), 0.5)
    ax.plot(x, dl["top"], marker="o", label=f"top-k by {result['method']}")
    ax.plot(x, dl["random"], marker="s", label="k random columns")
    ax.set_xscale("log")
    ax.set_xlabel("columns set to baseline (k; 0 at left)")
    ax.set_ylabel(dl["metric"].replace("_", " "))
    ax.set_title(result["target"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return True
