"""A self-contained HTML report of a run: ``RUN/report/index.html`` plus its PNG files.

Works on a single-model run (the layout of :mod:`moakit.runner`) and on a multi-model run
(``RUN/models/<name>/`` single-model runs, ``RUN/blend/`` from :mod:`moakit.blend`).

Two steps: :func:`collect_report` reads the run folder (and its data folder, for the
truth) into a plain dict; :func:`write_report` draws the figures and fills the Jinja2
template ``moakit/templates/report.html.j2`` with it. The page shows per model its OOF log
loss with the selection policy that produced it, the test log loss when the data folder
has answers, per-seed and per-fold scores, learning curves (each fold's ``history.json``),
the prior baseline, per-target OOF log loss, the blend's weights with their nested
(honest) score, model-correlation heatmaps, DeepInsight feature maps, timings and the
manifest facts; warnings for models no better than the prior and for ``oof``-selected
models. ``report.json`` beside index.html holds the collected dict. No external CSS or
JavaScript; images are files beside index.html.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.artifacts import atomic_dir, read_json, resolve_recorded
from moakit.manifest import read_manifest

FEATURE_MAP_GLOB = "feature_map*.png"
MAX_FEATURE_MAPS = 4  # per model
TEMPLATE = "report.html.j2"
HARDEST_TARGETS = 10


class ReportError(ValueError):
    """A folder that is not a moakit run."""


def _json(path: Path) -> dict:
    try:
        value = read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _manifest(run_dir: Path) -> dict:
    """A run folder's manifest in the current layout (older ones upgraded) as a dict;
    {} when it is missing or unreadable (the report shows what it can)."""
    try:
        return read_manifest(run_dir).to_json()
    except (OSError, ValueError):
        return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- reading a run


def _models(run_dir: Path) -> tuple[dict[str, Path], bool]:
    """(model name -> single-model run folder, whether the run is multi-model)."""
    models_dir = run_dir / "models"
    if models_dir.is_dir():
        manifest = _manifest(run_dir)
        order = list((manifest.get("models") or {}).keys()) or list(_json(run_dir / "blend" / "blend.json").get("names") or [])
        found = {p.name: p for p in sorted(models_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
        names = [n for n in order if n in found] + [n for n in found if n not in order]
        return {n: found[n] for n in names}, True
    if (run_dir / "metrics.json").exists() or (run_dir / "oof_predictions.csv").exists():
        config = _json(run_dir / "config.json")
        return {str(config.get("model") or run_dir.name): run_dir}, False
    raise ReportError(f"{run_dir}: not a moakit run (no metrics.json and no models/ folder)")


def _visible(path: Path, root: Path) -> bool:
    """Not inside a temporary (dot) folder such as an in-progress atomic write."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _feature_maps(model_dir: Path) -> list[Path]:
    return [p for p in sorted(model_dir.rglob(FEATURE_MAP_GLOB)) if _visible(p, model_dir) and p.is_file()]


@dataclass
class Truth:
    """What scores need beyond the run folder: the data's targets (and test answers)."""

    source: str
    sig_id: np.ndarray
    names: list[str]
    y: np.ndarray
    is_control: np.ndarray
    test_sig_id: np.ndarray
    test_is_control: np.ndarray
    y_test: np.ndarray | None  # answers/test_targets_scored.* when the folder has them


def load_truth(source: str | Path) -> Truth:
    """The targets of a lish-moa folder, and its test answers when it has ``answers/``."""
    from moakit.data.io import find_file, load, read_answers

    data = load(source)
    names = [str(n) for n in data.train.scored_names]
    y_test = None
    answers = Path(source) / "answers"
    if answers.is_dir():
        path = find_file(answers, "test_targets_scored", required=False)
        if path is not None:
            y_test = read_answers(path, data.test.sig_id, names)
    return Truth(str(source), np.asarray(data.train.sig_id).astype(str), names, np.asarray(data.train.scored),
                 np.asarray(data.train.is_control, bool), np.asarray(data.test.sig_id).astype(str),
                 np.asarray(data.test.is_control, bool), y_test)


def _find_truth(run_dir: Path, models: dict[str, Path], multi: bool,
                data: str | Path | None) -> tuple[Truth | None, str]:
    """(the truth or None, a note saying why scores that need it are missing)."""
    if data is not None:
        source = str(data)
    else:
        base = run_dir if multi else next(iter(models.values()))
        source = resolve_recorded(_manifest(base).get("data_source"), base)
    if not source or not Path(source).is_dir():
        return None, (f"the run's data folder ({source!r}) is not available, so per-target, per-fold and test "
                      "losses are not shown (give its new place with --data)")
    try:
        return load_truth(source), ""
    except Exception as exc:  # a report must not fail on an unreadable data folder
        return None, f"the data folder {source} could not be read ({type(exc).__name__}: {exc})"


def _aligned(path: Path, sig_id: np.ndarray, names: list[str]) -> np.ndarray:
    """A predictions CSV's values in the order of ``sig_id`` (rows) and ``names`` (columns)."""
    frame = pd.read_csv(path)
    pos = pd.Index(frame.iloc[:, 0].astype(str)).get_indexer(sig_id)
    if (pos < 0).any():
        raise ValueError(f"{path.name}: rows of the data are missing")
    cols = [str(c) for c in frame.columns[1:]]
    missing = [n for n in names if n not in cols]
    if missing:
        raise ValueError(f"{path.name}: target {missing[0]!r} is missing")
    return frame[names].to_numpy(np.float64)[pos]


def _test_score(path: Path, truth: Truth | None) -> float | None:
    """Log loss of a test predictions file against the answers (None without answers)."""
    if truth is None or truth.y_test is None or not path.exists():
        return None
    try:
        pred = _aligned(path, truth.test_sig_id, truth.names)
    except (OSError, ValueError):
        return None
    return metrics.score(truth.y_test, pred, truth.test_is_control)["log_loss"]


# --------------------------------------------------------------------------- per model


def _model_row(name: str, d: Path, blend: dict, truth: Truth | None) -> dict:
    """One model's line of the score table."""
    m, cfg = _json(d / "metrics.json"), _json(d / "config.json")
    from_blend = (blend.get("models") or {}).get(name, {})
    seeds = cfg.get("seeds") or list((m.get("seeds") or {}).keys())
    folds = (cfg.get("cv") or {}).get("n_folds")
    sel = m.get("selection") or {}
    ll = _number(m.get("log_loss"))
    weights = blend.get("weights") if isinstance(blend.get("weights"), dict) else {}
    return {
        "name": name, "model": m.get("model") or cfg.get("model") or "-",
        "profile": m.get("profile") or cfg.get("profile") or "-", "cv": (cfg.get("cv") or {}).get("scheme", "-"),
        "seeds_x_folds": f"{len(seeds)} x {folds}" if folds else "-",
        "selection": sel.get("policy") or "-", "optimistic": bool(sel.get("optimistic")),
        "log_loss": ll if ll is not None else _number(from_blend.get("log_loss")),
        "log_loss_treated": _number(m.get("log_loss_treated", from_blend.get("log_loss_treated"))),
        "test_log_loss": _test_score(d / "test_predictions.csv", truth),
        "weight": _number(weights.get(name)) if weights else None,
        "prior": m.get("prior") if isinstance(m.get("prior"), dict) else None,
        "seeds": m.get("seeds") or {},
    }


def _fold_rows(d: Path, truth: Truth | None, curves: list[dict]) -> list[dict]:
    """Per fold: its rows, the model's OOF log loss on them, and the epochs its networks ran."""
    if truth is None or not (d / "folds.npy").exists() or not (d / "oof_predictions.csv").exists():
        return []
    try:
        folds = np.load(d / "folds.npy", allow_pickle=False)
        oof = _aligned(d / "oof_predictions.csv", truth.sig_id, truth.names)
    except (OSError, ValueError):
        return []
    if len(folds) != len(oof):
        return []
    rows = []
    for k in sorted(int(v) for v in np.unique(folds)):
        rows_k = folds == k
        sc = metrics.score(truth.y[rows_k], oof[rows_k], truth.is_control[rows_k])
        epochs = [len(c["epochs"]) for c in curves if c["fold"] == k and c["stage"] == curves[-1]["stage"]]
        rows.append({"fold": k, "rows": int(rows_k.sum()), "treated": int((rows_k & ~truth.is_control).sum()),
                     **sc, "epochs": float(np.mean(epochs)) if epochs else None})
    return rows


def _histories(d: Path) -> list[dict]:
    """Every fold's epoch records (``stages/<stage>/seed_<s>/fold_<k>/history.json``)."""
    out = []
    stages = d / "stages"
    if not stages.is_dir():
        return out
    timings = _manifest(d).get("timings") or {}  # stage_<name>_seconds, in training order
    order = [k.removeprefix("stage_").removesuffix("_seconds") for k in timings if k.startswith("stage_")]
    for path in sorted(stages.glob("*/seed_*/fold_*/history.json")):
        if not _visible(path, stages):
            continue
        stage, seed, fold = path.parts[-4], path.parts[-3], path.parts[-2]
        try:
            epochs = list(_json(path).get("epochs") or [])
            seed_n, fold_n = int(seed.removeprefix("seed_")), int(fold.removeprefix("fold_"))
        except ValueError:
            continue
        out.append({"stage": stage, "seed": seed_n, "fold": fold_n, "epochs": epochs})
    rank = {s: i for i, s in enumerate(order)}
    out.sort(key=lambda c: (rank.get(c["stage"], len(rank)), c["stage"], c["seed"], c["fold"]))
    return out


def _per_target(run_dir: Path, models: dict[str, Path], multi: bool, truth: Truth | None) -> dict:
    """Per-target OOF log loss of the blend (multi-model) or of the model, with the prior."""
    blend_csv = run_dir / "blend" / "per_target_log_loss.csv"
    if multi and blend_csv.exists():
        frame = pd.read_csv(blend_csv, index_col=0)
        label, column = "blend", "blend"
    elif multi:
        return {"note": "no blend/per_target_log_loss.csv in this run"}
    elif truth is None:
        return {"note": ""}  # the data note says why
    else:
        label, column = next(iter(models)), "model"
        try:
            oof = _aligned(next(iter(models.values())) / "oof_predictions.csv", truth.sig_id, truth.names)
        except (OSError, ValueError) as exc:
            return {"note": f"per-target losses could not be computed ({exc})"}
        prior = metrics.prior_predictions(truth.y, truth.is_control, len(truth.y))
        frame = pd.DataFrame({
            "model": metrics.per_target_log_loss(truth.y, metrics.zero_controls(oof, truth.is_control)),
            "prior": metrics.per_target_log_loss(truth.y, metrics.zero_controls(prior, truth.is_control))},
            index=pd.Index(truth.names, name="target"))
    if column not in frame:
        return {"note": f"{blend_csv.name} has no {column!r} column"}
    frame = frame.sort_values(column, ascending=False)
    rows = [{"target": str(t), "value": float(r[column]), "prior": _number(r.get("prior"))} for t, r in frame.iterrows()]
    return {"label": label, "rows": rows, "note": ""}


# --------------------------------------------------------------------------- blend, prior, warnings


def _blend_section(run_dir: Path, blend: dict, truth: Truth | None) -> dict | None:
    if not blend:
        return None
    names = list(blend.get("names") or [])
    timings = blend.get("timings") or {}
    methods = []
    for mth, s in (blend.get("methods") or {}).items():
        methods.append({"method": mth, "weights": s.get("weights") or {}, "log_loss": s.get("log_loss"),
                        "log_loss_treated": s.get("log_loss_treated"), "n_evals": s.get("n_evals"),
                        "seconds": timings.get(f"{mth}_seconds", s.get("seconds")),
                        "chosen": mth == blend.get("method")})
    if blend.get("preset"):
        p = blend["preset"]
        methods.append({"method": f"preset {p.get('name')}", "weights": p.get("weights") or {},
                        "log_loss": p.get("log_loss"), "log_loss_treated": p.get("log_loss_treated"),
                        "n_evals": None, "seconds": None,
                        "chosen": str(blend.get("method", "")).startswith("preset:")})
    nested = blend.get("nested") or None
    chosen = str(blend.get("method") or "")
    nested_key = "preset" if chosen.startswith("preset:") else chosen
    mc = blend.get("mean_correlation") or {}
    return {
        "names": names, "method": chosen, "log_loss": blend.get("log_loss"),
        "log_loss_treated": blend.get("log_loss_treated"),
        "nested_log_loss": ((nested or {}).get("methods") or {}).get(nested_key, {}).get("log_loss"),
        "test_log_loss": _test_score(run_dir / "blend" / "submission.csv", truth),
        "methods": methods, "nested": nested, "best_single": blend.get("best_single"),
        "correlation": [{"name": n, "oof": (mc.get("oof") or {}).get(n), "test": (mc.get("test") or {}).get(n)}
                        for n in names] if mc.get("oof") else [],
    }


def _prior(rows: list[dict], blend: dict, truth: Truth | None) -> dict | None:
    """The per-target prior's scores: OOF from the runs, test from the answers."""
    prior = next((r["prior"] for r in rows if r["prior"]), None) or blend.get("prior")
    if not prior and truth is not None:
        pred = metrics.prior_predictions(truth.y, truth.is_control, len(truth.y))
        prior = metrics.score(truth.y, pred, truth.is_control)
    if not prior:
        return None
    out = {"log_loss": _number(prior.get("log_loss")), "log_loss_treated": _number(prior.get("log_loss_treated")),
           "test_log_loss": None}
    if truth is not None and truth.y_test is not None:
        pred = metrics.prior_predictions(truth.y, truth.is_control, len(truth.test_sig_id))
        out["test_log_loss"] = metrics.score(truth.y_test, pred, truth.test_is_control)["log_loss"]
    return out


def _warnings(rows: list[dict], prior: dict | None, blend: dict | None) -> list[dict]:
    out = []
    for r in rows:
        if r["optimistic"]:
            out.append({"model": r["name"], "text": "selection policy oof (epochs chosen on the rows that give its "
                        "OOF predictions, as the winners did): its OOF log loss is optimistic."})
        p = (prior or {}).get("log_loss")
        if p is not None and r["log_loss"] is not None and r["log_loss"] >= p:
            out.append({"model": r["name"], "text": f"no better than the per-target prior (OOF {r['log_loss']:.6f} "
                        f"vs prior {p:.6f}): it learned nothing usable (too few epochs or rows for this profile?)."})
    nested = (blend or {}).get("nested") or {}
    if "beats_best_single" in nested and not nested["beats_best_single"]:
        out.append({"model": "blend", "text": "the weight search does not beat the best single model under nested "
                    "evaluation: its in-sample gain is optimism."})
    return out


# --------------------------------------------------------------------------- timings, provenance


def _timings(models: dict[str, Path], multi: bool, top: dict, blend: dict) -> dict:
    rows = []
    wf_models = top.get("models") if multi and isinstance(top.get("models"), dict) else {}
    for name, d in models.items():
        t = _manifest(d).get("timings") or {}
        stages = ", ".join(f"{k.removeprefix('stage_').removesuffix('_seconds')} {v:.1f}"
                           for k, v in t.items() if k.startswith("stage_") and isinstance(v, (int, float)))
        rows.append({"name": name, "stages": stages or "-", "total": t.get("total_seconds"),
                     "wall": (wf_models.get(name) or {}).get("seconds")})
    if blend:
        bt = blend.get("timings") or {}
        rows.append({"name": "blend", "stages": ", ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in bt.items()
                                                          if k != "total_seconds"),
                     "total": bt.get("total_seconds"), "wall": None})
    return {"rows": rows, "workflow_seconds": (top.get("timings") or {}).get("total_seconds") if multi else None}


def _provenance(models: dict[str, Path], multi: bool, top: dict) -> dict:
    base = top if top else _manifest(next(iter(models.values())))
    facts = [{"key": k, "value": base[k]} for k in ("kind", "status", "error", "config_source", "profile", "model",
                                                    "data_source", "data_fingerprint", "n_train", "n_test",
                                                    "executor", "created", "updated") if k in base]
    facts += [{"key": f"version: {k}", "value": v} for k, v in (base.get("versions") or {}).items()]
    per_model = []
    if multi:
        for name, d in models.items():
            man = _manifest(d)
            vers = man.get("versions") or {}
            per_model.append({"name": name, "status": man.get("status", "-"),
                              "data_fingerprint": man.get("data_fingerprint", "-"),
                              "moakit_version": vers.get("moakit", "-"), "torch": vers.get("torch", "-"),
                              "created": man.get("created", "-")})
    return {"facts": facts, "models": per_model}


# --------------------------------------------------------------------------- collecting


def collect_report(run_dir: str | Path, data: str | Path | None = None) -> dict:
    """Everything the report shows, read from ``run_dir``, as a plain dict (JSON-able but
    for NaN). ``data``: the lish-moa folder of the run when it has moved (default: the one
    its manifest records); its targets give per-fold, per-target and test scores."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    models, multi = _models(run_dir)
    top = _manifest(run_dir)
    blend = _json(run_dir / "blend" / "blend.json") if multi else {}
    truth, data_note = _find_truth(run_dir, models, multi, data)
    rows = [_model_row(name, d, blend, truth) for name, d in models.items()]
    prior = _prior(rows, blend, truth)
    blend_section = _blend_section(run_dir, blend, truth)
    curves = {name: _histories(d) for name, d in models.items()}
    return {
        "title": f"moakit report: {run_dir.name}", "run_dir": str(run_dir.resolve()), "multi": multi,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"), "status": top.get("status"),
        "data": {"source": truth.source if truth else None, "answers": bool(truth and truth.y_test is not None),
                 "note": data_note},
        "models": rows, "prior": prior, "blend": blend_section, "warnings": _warnings(rows, prior, blend_section),
        "folds": {name: _fold_rows(d, truth, curves[name]) for name, d in models.items()},
        "curves": curves,
        "per_target": _per_target(run_dir, models, multi, truth),
        "feature_maps": {name: [str(p) for p in _feature_maps(d)[:MAX_FEATURE_MAPS]] for name, d in models.items()},
        "heatmaps": [str(run_dir / "blend" / f) for f in ("correlation_oof.png", "correlation_test.png")
                     if multi and (run_dir / "blend" / f).exists()],
        "timings": _timings(models, multi, top, blend), "provenance": _provenance(models, multi, top),
        "model_dirs": {name: str(d) for name, d in models.items()},
    }


# --------------------------------------------------------------------------- figures


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # a pyplot-free Figure: nothing to close
    path.write_bytes(buf.getvalue())


def _plot_per_target(rows: list[dict], label: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    values = np.array([r["value"] for r in rows])  # sorted, hardest first
    prior = np.array([np.nan if r["prior"] is None else r["prior"] for r in rows])
    has_prior = bool(np.isfinite(prior).any())
    x = np.arange(len(rows))
    top = min(20, len(rows))
    fig = Figure(figsize=(13, 4.8))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax.bar(x, values, width=1.0, color="#3b75af", label=f"{label} (mean {values.mean():.5f})")
    if has_prior:
        ax.plot(x, prior, ".", color="#d62728", markersize=3, label=f"prior (mean {np.nanmean(prior):.5f})")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_xlabel(f"{len(rows)} targets, sorted by {label} log loss")
    ax.set_ylabel("OOF log loss")
    ax.set_title(f"Per-target OOF log loss: {label} vs prior")
    ax.legend(loc="upper right")
    yy = np.arange(top)
    ax2.barh(yy, values[:top], color="#3b75af")
    if has_prior:
        ax2.plot(prior[:top], yy, "|", color="#d62728", markersize=10, mew=2)
    ax2.set_yticks(yy, labels=[r["target"][:40] for r in rows[:top]], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_title(f"hardest {top} (red: prior)", fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)


def _plot_models(rows: list[tuple[str, float]], prior: float | None, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.5 * len(rows) + 1.5))
    ax = fig.subplots()
    names, vals = [r[0] for r in rows], [r[1] for r in rows]
    ax.barh(np.arange(len(rows)), vals, color=["#2ca02c" if n == "blend" else "#3b75af" for n in names])
    ax.set_yticks(np.arange(len(rows)), labels=names)
    ax.invert_yaxis()
    finite = [v for v in vals if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite + ([prior] if prior else []))
        ax.set_xlim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    if prior is not None and math.isfinite(prior):
        ax.axvline(prior, color="#d62728", ls="--", label=f"prior {prior:.5f}")
        ax.legend(loc="lower right")
    for i, v in enumerate(vals):
        if math.isfinite(v):
            ax.text(v, i, f" {v:.5f}", va="center", fontsize=8)
    ax.set_xlabel("OOF log loss (all rows)")
    fig.tight_layout()
    _save_png(fig, path)


def _plot_curves(curves: list[dict], name: str, path: Path) -> bool:
    """Learning curves of one model: a panel per stage, the folds of its first seed
    overlaid (training loss solid, judged validation loss dashed). False: nothing to plot."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stages = list(dict.fromkeys(c["stage"] for c in curves if c["epochs"]))
    if not stages:
        return False
    fig = Figure(figsize=(min(5.5 * len(stages), 16), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(stages), squeeze=False)[0])
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for ax, stage in zip(axes, stages):
        runs = [c for c in curves if c["stage"] == stage and c["epochs"]]
        seed = min(c["seed"] for c in runs)
        for c in (c for c in runs if c["seed"] == seed):
            color = colors[c["fold"] % len(colors)]
            x = np.arange(1, len(c["epochs"]) + 1)
            train = [np.nan if e.get("train_loss") is None else e["train_loss"] for e in c["epochs"]]
            valid = [np.nan if e.get("valid_loss") is None else e["valid_loss"] for e in c["epochs"]]
            ax.plot(x, train, "-", color=color, lw=1.2, label=f"fold {c['fold']}")
            if np.isfinite(valid).any():
                ax.plot(x, valid, "--", color=color, lw=1.2)
        _mark_phases(ax, next(c for c in runs if c["seed"] == seed)["epochs"])
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (all phases in order)")
        ax.set_title(f"{name}: {stage}, seed {seed}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (solid: train, dashed: valid)")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save_png(fig, path)
    return True


def _mark_phases(ax, epochs: list[dict]) -> None:
    """Dotted lines where a fit's training phase changes (records with a ``phase``)."""
    phases = [e.get("phase") for e in epochs]
    for i, phase in enumerate(phases):
        if phase is not None and (i == 0 or phase != phases[i - 1]):
            if i > 0:
                ax.axvline(i + 0.5, color="#999", ls=":", lw=1)
            ax.annotate(str(phase), (i + 1, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="#555",
                        va="top", ha="left", xytext=(2, -2), textcoords="offset points")


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _figures(report: dict, tmp: Path, out_dir: Path) -> dict:
    """Draw or copy every image into ``tmp``; returns what the template shows."""
    figs: dict[str, Any] = {"model_scores": None, "per_target": None, "curves": {}, "heatmaps": [], "maps": []}
    scores = [(r["name"], r["log_loss"]) for r in report["models"] if r["log_loss"] is not None]
    if report["blend"] and _number(report["blend"]["log_loss"]) is not None:
        scores.append(("blend", float(report["blend"]["log_loss"])))
    if len(scores) > 1:
        _plot_models(scores, (report["prior"] or {}).get("log_loss"), tmp / "model_scores.png")
        figs["model_scores"] = "model_scores.png"
    if report["per_target"].get("rows"):
        _plot_per_target(report["per_target"]["rows"], report["per_target"]["label"], tmp / "per_target_log_loss.png")
        figs["per_target"] = "per_target_log_loss.png"
    for name, curves in report["curves"].items():
        f = f"curves_{_safe_name(name)}.png"
        if _plot_curves(curves, name, tmp / f):
            figs["curves"][name] = f
    captions = {"correlation_oof.png": "OOF predictions (treated rows)",
                "correlation_test.png": "test predictions (treated rows)"}
    for src in map(Path, report["heatmaps"]):
        shutil.copyfile(src, tmp / src.name)
        figs["heatmaps"].append({"file": src.name, "caption": captions.get(src.name, src.name)})
    for name, maps in report["feature_maps"].items():
        model_dir = Path(report["model_dirs"][name])
        for k, src in enumerate(map(Path, maps)):
            dst = f"deepinsight_{_safe_name(name)}_{k}.png"
            shutil.copyfile(src, tmp / dst)
            if out_dir.resolve() in src.resolve().parents:
                shutil.copyfile(src, tmp / src.name)  # a map the model put in this report folder stays
            figs["maps"].append({"file": dst, "caption": f"{name}: {src.relative_to(model_dir)}"})
    return figs


# --------------------------------------------------------------------------- rendering


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def render_html(report: dict, figures: dict) -> str:
    """The report page: the template filled with the collected dict and the figure files."""
    from importlib import resources

    import jinja2

    source = resources.files("moakit").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    hardest = (report["per_target"].get("rows") or [])[:HARDEST_TARGETS]
    return env.from_string(source).render(r=report, fig=figures, hardest=hardest)


def _plain(value: Any) -> Any:
    """NaN and infinities as null, for a strict JSON file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, data: str | Path | None = None) -> Path:
    """Write ``out_dir`` (default ``RUN/report``) with index.html, its PNGs and report.json;
    returns the path of index.html. ``data``: see :func:`collect_report`."""
    report = collect_report(run_dir, data)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    with atomic_dir(out_dir) as tmp:
        figures = _figures(report, tmp, out_dir)
        (tmp / "index.html").write_text(render_html(report, figures), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(_plain(report), indent=1) + "\n", encoding="utf-8")
    return out_dir / "index.html"
