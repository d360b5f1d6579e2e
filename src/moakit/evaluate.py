"""Per-MoA trust: which targets' calls carry information (``moakit evaluate``).

A mean log loss says nothing about one mechanism. For every scored target this module
scores a run's predictions on **honest rows only**, each set on its own:

- ``oof``: the out-of-fold predictions of the training rows (honest for unseen drugs under
  the drug-aware CV; under the old CV a drug's other replicates were in the training folds,
  which the result says);
- ``test``: the test predictions against the data folder's ``answers/`` when it has them.

Per target, on the treated rows of the set (control rows are predicted 0 and excluded):
positives, log loss (clipped as the competition metric), PR-AUC (scikit-learn's
``average_precision_score``), ROC-AUC, Brier score and the expected calibration error
(:func:`calibration_error`: 10 equal-count bins, edges at the predictions' quantiles, the
mean |mean prediction - positive rate| weighted by bin size). Beside them:

- the per-target prior: for ``oof`` the prior out of fold (each model's own folds; for a
  blend the members' out-of-fold priors blended with its weights), for ``test`` the
  training means;
- a label-shuffled baseline (:func:`train_shuffled`): the same model config(s) trained on the
  same folds with the training rows' scored and non-scored label rows permuted together
  (whole drugs under the drug-aware CV), ``N`` permutation seeds, scored against the TRUE
  labels. A target is flagged ``no better than shuffled`` unless its PR-AUC exceeds the
  baseline seeds' mean by more than ``SPREAD_FACTOR`` (2) times their standard deviation
  (ddof=1; 0 with one seed).

Where a group id (drug) exists, compound-level metrics too: per drug, the mean of its
signatures' predicted probabilities against the drug's label (positive when any of its
signatures is).

Files: ``ROOT/evaluation/`` (``evaluation.json``, ``per_target.csv``, ``pr_auc.png``) and the
baseline's runs in ``ROOT/shuffled/seed_<s>/<member>/``, ROOT being the model run, the
workflow run or the blend folder evaluated. The baseline's training and predictions are in
:mod:`moakit.evaluate_baseline`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.evaluate_baseline import (  # noqa: F401  (shuffle_labels re-exported)
    shuffle_labels, shuffled_predictions, shuffled_seeds, train_shuffled,
)
from moakit.runs import layout

N_BINS = 10
SPREAD_FACTOR = 2.0
BINNING = f"{N_BINS} equal-count bins (edges at the predictions' quantiles; ties share a bin), treated rows"
RULE = (f"flagged 'no better than shuffled' unless PR-AUC > mean + {SPREAD_FACTOR:g} x sd of the shuffled-label "
        "baseline's PR-AUC over its seeds (sd with ddof=1; 0 for one seed)")


class EvaluateError(ValueError):
    """A folder that cannot be evaluated (not a run, no truth, ...)."""


# --------------------------------------------------------------------------- reading a run


@dataclass
class RunFiles:
    """What evaluate needs from a run folder, whatever its kind."""

    kind: str  # "model", "workflow" or "blend"
    root: Path  # where evaluation/ and shuffled/ are written
    members: dict[str, Path]  # member name -> single-model run folder
    predictions: tuple[Path, Path] | None  # the blend's (OOF, test) files; None: the model's own
    weights: dict | None  # the blend's chosen weights per member (float or per-target list)
    configs: dict[str, dict]  # member name -> its config.json


def read_run_files(run_dir: str | Path) -> RunFiles:
    """The one place evaluate reads a run folder's layout (:mod:`moakit.runs.layout`): a
    model run (``moakit train``), a workflow run (``models/<name>/`` + ``blend/``) or a blend
    folder (``moakit blend``)."""
    from moakit.artifacts import read_json
    from moakit.blend.presets import prediction_weights
    from moakit.runs import layout

    root = Path(run_dir)
    kind = layout.kind_of(root)
    if kind is None and (root / layout.MODELS_DIR).is_dir():
        kind = "workflow"  # a workflow whose workflow.json is gone: its models/ and blend/ still tell
    if kind is None:
        raise EvaluateError(f"{root}: not a moakit run folder (no {layout.WORKFLOW}, {layout.CONFIG} or "
                            f"{layout.BLEND})")
    if kind == "model":
        config = read_json(root / layout.CONFIG)
        members, preds, weights = {str(config.get("model") or root.name): root}, None, None
    else:
        blend_dir = layout.blend_dir(root) if kind == "workflow" else root
        if not (blend_dir / layout.BLEND).exists():
            raise EvaluateError(f"{root}: no {layout.BLEND} yet; finish the run first")
        summary = read_json(blend_dir / layout.BLEND)
        names = [str(n) for n in summary.get("names") or []]
        if kind == "workflow":
            members = {n: layout.model_dir(root, n) for n in names}
        else:
            members = {n: (root / summary["models"][n]["run_dir"]).resolve() for n in names}
        preds = (blend_dir / layout.BLEND_OOF, blend_dir / layout.BLEND_TEST)
        weights = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in prediction_weights(summary).items()}
    missing = [str(d) for d in members.values() if not (d / layout.CONFIG).exists() or not (d / layout.FOLDS).exists()]
    if missing:
        raise EvaluateError(f"{root}: model run folder(s) missing or without {layout.CONFIG} / {layout.FOLDS}: "
                            f"{', '.join(missing)}")
    configs = {n: read_json(d / layout.CONFIG) for n, d in members.items()}
    return RunFiles(kind, root, members, preds, weights, configs)


# --------------------------------------------------------------------------- honest rows


@dataclass
class Honest:
    """One set of honest rows (treated rows only): truth, predictions, prior, group ids."""

    name: str  # "oof" or "test"
    sig_id: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    prior: np.ndarray
    prior_kind: str
    group: np.ndarray | None
    note: str = ""


@dataclass
class Loaded:
    run: RunFiles
    data: object  # MoAData
    inputs: object  # blend.BlendInputs of the members (true targets in their row order)
    sets: dict[str, Honest]


def load(run_dir: str | Path, data: str | Path | None = None) -> Loaded:
    """A run's honest sets, read with the blend module's readers (rows in the members' order)."""
    from moakit.blend.members import data_from_manifests, load_runs, oof_prior
    from moakit.data.io import load as load_data

    run = read_run_files(run_dir)
    names, dirs = list(run.members), list(run.members.values())
    moa = load_data(data) if data is not None else data_from_manifests(dirs, names)
    inputs = load_runs(dirs, names, data=moa)
    weights = [run.weights[n] for n in names] if run.weights else [1.0]
    if run.predictions:
        oof = _read_aligned(run.predictions[0], inputs.train_sig_id, inputs.target_names)
        test = _read_aligned(run.predictions[1], inputs.test_sig_id, inputs.target_names)
    else:
        oof, test = inputs.oof[0], inputs.test[0]
    prior_oof = oof_prior(inputs, weights)
    kind = "out of fold (each model's own folds" + (", blended)" if run.weights else ")")
    if prior_oof is None:
        prior_oof = metrics.prior_predictions(inputs.y, inputs.is_control, len(inputs.y))
        kind = "in sample (the runs' folds do not match their rows)"
    treated = ~inputs.is_control
    drug = _aligned_groups(getattr(moa.train, "drug_id", None), moa.train.sig_id, inputs.train_sig_id)
    sets = {"oof": Honest("oof", inputs.train_sig_id[treated], inputs.y[treated], oof[treated], prior_oof[treated],
                          kind, None if drug is None else drug[treated], _oof_note(run))}
    answers = _answers(moa, inputs)
    if answers is not None:
        y_test, test_ctl, test_drug = answers
        mean = metrics.prior_predictions(inputs.y, inputs.is_control, int((~test_ctl).sum()))
        sets["test"] = Honest("test", inputs.test_sig_id[~test_ctl], y_test[~test_ctl], test[~test_ctl], mean,
                              "training means", None if test_drug is None else test_drug[~test_ctl])
    return Loaded(run, moa, inputs, sets)


def _read_aligned(path: Path, sig_id: np.ndarray, names: list[str]) -> np.ndarray:
    from moakit.blend.members import align_rows, read_member_predictions

    frame = read_member_predictions(path, path.parent.name)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise EvaluateError(f"{path}: target column {missing[0]!r} is missing")
    return align_rows(frame[["sig_id", *names]], np.asarray(sig_id), path.parent.name, path, path.parent.name)


def _aligned_groups(group, sig_id, order) -> np.ndarray | None:
    if group is None:
        return None
    pos = pd.Index(np.asarray(sig_id).astype(str)).get_indexer(np.asarray(order).astype(str))
    return np.asarray(group).astype(str)[pos] if (pos >= 0).all() else None


def _answers(moa, inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(test targets, test control rows, test drug ids or None) in the runs' test row order,
    from ``DATA/answers/test_targets_scored.*`` (and ``test_drug.*``); None without answers."""
    from moakit.data.io import find_file, read_answers, read_table

    from moakit.runs import layout

    folder = layout.answers_dir(moa.source or ".")
    path = find_file(folder, layout.TEST_ANSWERS_STEM, required=False) if moa.source and folder.is_dir() else None
    if path is None:
        return None
    order = np.asarray(inputs.test_sig_id).astype(str)
    names = list(moa.train.scored_names)
    y = read_answers(path, order, names)[:, [names.index(n) for n in inputs.target_names]]
    pos = pd.Index(np.asarray(moa.test.sig_id).astype(str)).get_indexer(order)
    ctl = np.asarray(moa.test.is_control, bool)[pos]
    drug_path = find_file(folder, layout.TEST_DRUG_STEM, required=False)
    drug = None
    if drug_path is not None:
        frame = read_table(drug_path)
        drug = _aligned_groups(frame["drug_id"].to_numpy(), frame["sig_id"].to_numpy(), order)
    return np.asarray(y, np.float64), ctl, drug


def _oof_note(run: RunFiles) -> str:
    schemes = {n: (c.get("cv") or {}).get("scheme", "?") for n, c in run.configs.items()}
    old = [n for n, s in schemes.items() if s != "drug"]
    if not old:
        return "drug-aware CV: every OOF row was predicted by networks that never saw its drug"
    return (f"{', '.join(old)}: old (row-wise) CV, whose OOF rows were predicted by networks that saw other "
            "replicates of the same drug: optimistic for unseen drugs")


# --------------------------------------------------------------------------- per-target metrics


def calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error of one target: ``n_bins`` equal-count bins (edges at the
    quantiles of the predictions; equal predictions share a bin), the size-weighted mean
    over bins of |mean prediction - positive rate|. Equal-count bins, because a rare
    target's probabilities crowd near 0, where equal-width bins would put nearly every row
    in the first one."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    if len(y) == 0:
        return float("nan")
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, p, side="right")
    size = np.bincount(bins, minlength=len(edges) + 1)
    used = size > 0
    gap = np.abs(np.bincount(bins, weights=p, minlength=len(size))[used] / size[used]
                 - np.bincount(bins, weights=y, minlength=len(size))[used] / size[used])
    return float((gap * size[used]).sum() / len(y))


def _ranking(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(PR-AUC, ROC-AUC) of one target; NaN without both classes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.min() == y.max():
        return float("nan"), float("nan")
    return float(average_precision_score(y, p)), float(roc_auc_score(y, p))


def pr_aucs(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """PR-AUC (average precision) of every target (columns); NaN where a target has no positive."""
    return np.array([_ranking(y[:, j], pred[:, j])[0] for j in range(y.shape[1])])


def roc_aucs(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """ROC-AUC of every target (columns); NaN where a target has no positive (or no negative)."""
    return np.array([_ranking(y[:, j], pred[:, j])[1] for j in range(y.shape[1])])


def target_table(h: Honest, names: list[str]) -> pd.DataFrame:
    """One row per target: the model's metrics on the set's rows beside the prior's."""
    y, p, prior = np.asarray(h.y, np.float64), np.asarray(h.pred, np.float64), np.asarray(h.prior, np.float64)
    rank = [_ranking(y[:, j], p[:, j]) for j in range(len(names))]
    frame = pd.DataFrame({
        "positives": y.sum(axis=0).astype(int),
        "log_loss": metrics.per_target_log_loss(y, p),
        "pr_auc": [r[0] for r in rank],
        "roc_auc": [r[1] for r in rank],
        "brier": ((p - y) ** 2).mean(axis=0),
        "ece": [calibration_error(y[:, j], p[:, j]) for j in range(len(names))],
        "prior_log_loss": metrics.per_target_log_loss(y, prior),
        "prior_pr_auc": pr_aucs(y, prior),
        "prior_brier": ((prior - y) ** 2).mean(axis=0),
    }, index=pd.Index(names, name="target"))
    frame["beats_prior"] = frame["log_loss"] < frame["prior_log_loss"]
    return frame


def compound_table(h: Honest, names: list[str]) -> pd.DataFrame | None:
    """Per target at the compound level: each drug's mean predicted probability over its
    signatures against the drug's label (positive when any of its signatures is)."""
    if h.group is None:
        return None
    frame_p = pd.DataFrame(np.asarray(h.pred, np.float64)).groupby(h.group).mean()
    frame_y = pd.DataFrame(np.asarray(h.y, np.float64)).groupby(h.group).max().loc[frame_p.index]
    y, p = frame_y.to_numpy(), frame_p.to_numpy()
    rank = [_ranking(y[:, j], p[:, j]) for j in range(len(names))]
    return pd.DataFrame({"compounds": len(y), "compound_positives": y.sum(axis=0).astype(int),
                         "compound_pr_auc": [r[0] for r in rank], "compound_roc_auc": [r[1] for r in rank]},
                        index=pd.Index(names, name="target"))


def flag(pr_auc: float, base: np.ndarray) -> str:
    """The trust verdict of one target's PR-AUC against its shuffled baseline's seeds (see RULE)."""
    if not math.isfinite(pr_auc):
        return "no positives"
    base = np.asarray(base, np.float64)
    base = base[np.isfinite(base)]
    if len(base) == 0:
        return "no baseline"
    spread = float(base.std(ddof=1)) if len(base) > 1 else 0.0
    return "beats shuffled" if pr_auc > base.mean() + SPREAD_FACTOR * spread else "no better than shuffled"


# --------------------------------------------------------------------------- the evaluation


@dataclass
class Evaluation:
    summary: dict  # JSON-able: settings and per-set summaries
    tables: dict[str, pd.DataFrame]  # per set: one row per target, sorted by PR-AUC (best first)
    out_dir: Path | None = None


def evaluate(run_dir: str | Path, data: str | Path | None = None, shuffled_baseline: int = 0,
             show_progress: bool = False, device: str | None = None, write: bool = True) -> Evaluation:
    """Per-target trust metrics of a run on its honest rows (module docstring), beside the
    prior and the shuffled-label baseline. ``shuffled_baseline`` (N > 0) trains the missing
    baseline seeds 0..N-1 first; without it, complete baseline seeds already in the run
    folder are used. ``write``: save ``ROOT/evaluation/`` (JSON, CSV, PNG)."""
    loaded = load(run_dir, data)
    if shuffled_baseline:
        train_shuffled(loaded, shuffled_baseline, show_progress=show_progress, device=device)
    seeds = shuffled_seeds(loaded)
    base = [shuffled_predictions(loaded, s) for s in seeds]
    names = list(loaded.inputs.target_names)
    tables, sets = {}, {}
    for key, h in loaded.sets.items():
        table = target_table(h, names)
        comp = compound_table(h, names)
        if comp is not None:
            table = table.join(comp)
        b = np.stack([pr_aucs(h.y, bp[key]) for bp in base]) if base else np.empty((0, len(names)))
        if base:
            table["shuffled_pr_auc_mean"] = [_mean(b[:, j]) for j in range(len(names))]
            table["shuffled_pr_auc_sd"] = b.std(axis=0, ddof=1) if len(base) > 1 else 0.0
            table["shuffled_log_loss_mean"] = np.mean([metrics.per_target_log_loss(h.y, bp[key]) for bp in base],
                                                      axis=0)
            roc = np.stack([roc_aucs(h.y, bp[key]) for bp in base])
            table["shuffled_roc_auc_mean"] = [_mean(roc[:, j]) for j in range(len(names))]
        table["trust"] = [flag(v, b[:, j]) for j, v in enumerate(table["pr_auc"])]
        tables[key] = table.sort_values("pr_auc", ascending=False, na_position="last")
        sets[key] = _set_summary(h, tables[key])
    summary = {"run_dir": str(loaded.run.root), "kind": loaded.run.kind, "members": list(loaded.run.members),
               "rows": "treated rows only (control rows are predicted 0 and excluded)", "calibration_bins": BINNING,
               "rule": RULE, "shuffled": {"seeds": seeds, "folder": str(layout.shuffled_root(loaded.run.root)),
                                          "how": _shuffle_text(loaded)},
               "compound": "per drug: mean of its signatures' probabilities vs its label (any signature positive)",
               "sets": sets}
    result = Evaluation(summary, tables)
    if write:
        result.out_dir = write_evaluation(result, layout.evaluation_dir(loaded.run.root))
    return result


def _shuffle_text(loaded: Loaded) -> str:
    schemes = {(c.get("cv") or {}).get("scheme") for c in loaded.run.configs.values()}
    how = "by whole drugs" if schemes == {"drug"} else (
        "by whole drugs for drug-aware-CV members, row by row for old-CV members" if "drug" in schemes
        else "row by row")
    return (f"the same config(s) on the same folds, trained with the treated training rows' label rows (scored and "
            f"non-scored together) permuted {how}; seed s permutes with numpy default_rng(s); scored against the "
            "true labels")


def _set_summary(h: Honest, table: pd.DataFrame) -> dict:
    has = table["positives"] > 0
    out = {"rows": int(len(h.y)), "targets": int(len(table)), "targets_with_positives": int(has.sum()),
           "prior": h.prior_kind, "note": h.note,
           "mean_pr_auc": _mean(table.loc[has, "pr_auc"]), "mean_prior_pr_auc": _mean(table.loc[has, "prior_pr_auc"]),
           "mean_roc_auc": _mean(table.loc[has, "roc_auc"]), "log_loss": _mean(table["log_loss"]),
           "prior_log_loss": _mean(table["prior_log_loss"]), "beats_prior": int(table["beats_prior"].sum()),
           "mean_brier": _mean(table["brier"]), "mean_ece": _mean(table["ece"])}
    if "shuffled_pr_auc_mean" in table:
        out["mean_shuffled_pr_auc"] = _mean(table.loc[has, "shuffled_pr_auc_mean"])
        out["mean_shuffled_roc_auc"] = _mean(table.loc[has, "shuffled_roc_auc_mean"])
        out["shuffled_log_loss"] = _mean(table["shuffled_log_loss_mean"])
        out["beats_shuffled"] = int((table["trust"] == "beats shuffled").sum())
        out["no_better_than_shuffled"] = int((table["trust"] == "no better than shuffled").sum())
    if "compound_pr_auc" in table:
        out["mean_compound_pr_auc"] = _mean(table.loc[table["compound_positives"] > 0, "compound_pr_auc"])
    return out


def _mean(values) -> float | None:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


# --------------------------------------------------------------------------- output


def combined_table(result: Evaluation) -> pd.DataFrame:
    """Every set's per-target table in one frame, with a ``rows`` column (oof / test)."""
    frames = [t.reset_index().assign(rows=key) for key, t in result.tables.items()]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["rows", *[c for c in frame.columns if c != "rows"]]]


def write_csv(result: Evaluation, path: str | Path) -> Path:
    from moakit.artifacts import atomic_file

    path = Path(path)
    with atomic_file(path, "w") as fh:
        combined_table(result).to_csv(fh, index=False, float_format="%.6g")
    return path


def write_evaluation(result: Evaluation, out_dir: Path) -> Path:
    """``out_dir``: evaluation.json (summary + per-target records), per_target.csv and
    pr_auc.png, written together (a temporary folder renamed into place)."""
    import json

    from moakit.artifacts import atomic_dir

    with atomic_dir(out_dir) as tmp:
        write_csv(result, tmp / layout.EVALUATION_CSV)
        plot_pr_auc(result, tmp / layout.EVALUATION_PNG)
        doc = {**result.summary, "per_target": {k: table_records(t) for k, t in result.tables.items()}}
        (tmp / layout.EVALUATION).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return out_dir


def table_records(table: pd.DataFrame) -> list[dict]:
    out = []
    for target, row in table.iterrows():
        rec = {"target": str(target)}
        for k, v in row.items():
            if isinstance(v, (bool, np.bool_)):
                rec[k] = bool(v)
            elif isinstance(v, (int, np.integer)):
                rec[k] = int(v)
            elif isinstance(v, (float, np.floating)):
                rec[k] = float(v) if math.isfinite(v) else None
            else:
                rec[k] = v
        out.append(rec)
    return out


def plot_pr_auc(result: Evaluation, path: Path) -> Path:
    """PR-AUC per target (sorted) of each set against the shuffled baseline (mean and the
    flag threshold, mean + 2 sd) and the prior. A pyplot-free Figure: no global state."""
    from matplotlib.figure import Figure

    keys = list(result.tables)
    fig = Figure(figsize=(12, 3.6 * len(keys)))
    axes = np.atleast_1d(fig.subplots(len(keys), 1, squeeze=False)[:, 0])
    for ax, key in zip(axes, keys):
        t = result.tables[key]
        t = t[t["positives"] > 0]
        x = np.arange(len(t))
        colors = np.where(t["trust"] == "no better than shuffled", "#b0b0b0", "#3b75af")
        ax.bar(x, t["pr_auc"], width=1.0, color=colors,
               label=f"model (mean {t['pr_auc'].mean():.3f}; grey: no better than shuffled)")
        if "shuffled_pr_auc_mean" in t:
            m, sd = t["shuffled_pr_auc_mean"].to_numpy(), t["shuffled_pr_auc_sd"].to_numpy()
            ax.plot(x, m, ".", color="#ff7f0e", markersize=3, label=f"shuffled labels (mean {np.nanmean(m):.3f})")
            ax.plot(x, m + SPREAD_FACTOR * sd, "_", color="#ff7f0e", markersize=4, alpha=0.7,
                    label=f"shuffled mean + {SPREAD_FACTOR:g} sd (flag threshold)")
        ax.plot(x, t["prior_pr_auc"], ".", color="#d62728", markersize=2, label="prior")
        ax.set_xlim(-0.5, len(t) - 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("PR-AUC")
        ax.set_xlabel(f"{len(t)} targets with positives, sorted by the model's PR-AUC")
        ax.set_title(f"{key}: {result.summary['sets'][key]['rows']} treated rows")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    path.write_bytes(buf.getvalue())
    return path
