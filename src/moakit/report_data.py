"""What a run's report shows, read from the run folder (and its data folder, for the truth)
into a plain dict: :func:`collect_report`. :mod:`moakit.report` draws and renders it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moakit import metrics
from moakit.artifacts import read_json, resolve_recorded
from moakit.manifest import read_manifest
from moakit.runs import layout, records
from moakit.runs.run import BlendRun

FEATURE_MAP_GLOB = "feature_map*.png"
MAX_FEATURE_MAPS = 4  # per model


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


def as_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- reading a run


def _models(run_dir: Path) -> tuple[dict[str, Path], bool]:
    """(model name -> single-model run folder, whether the run is multi-model: a workflow
    run or a blend folder)."""
    kind = layout.kind_of(run_dir)
    if kind == "workflow":
        models_dir = run_dir / layout.MODELS_DIR
        manifest = _manifest(run_dir)
        order = (list((manifest.get("models") or {}).keys())
                 or list(_json(_blend_dir(run_dir) / layout.BLEND).get("names") or []))
        found = ({p.name: p for p in sorted(models_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
                 if models_dir.is_dir() else {})
        names = [n for n in order if n in found] + [n for n in found if n not in order]
        return {n: found[n] for n in names}, True
    if kind == "blend":
        try:
            return BlendRun(run_dir).model_dirs(), True
        except ValueError as exc:
            raise ReportError(str(exc)) from None
    if kind == "model":
        config = _json(run_dir / layout.CONFIG)
        return {str(config.get("model") or run_dir.name): run_dir}, False
    raise ReportError(f"{run_dir}: not a moakit run (no {layout.CONFIG}, {layout.WORKFLOW} or {layout.BLEND})")


def _blend_dir(run_dir: Path) -> Path:
    """Where a multi-model run's blend files are: RUN/blend of a workflow, the folder itself
    for a blend folder."""
    return run_dir if layout.kind_of(run_dir) == "blend" else layout.blend_dir(run_dir)


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
    from moakit.data.io import load

    data = load(source)
    names = [str(n) for n in data.train.scored_names]
    y_test = None
    y_test = records.read_test_answers(source, data.test.sig_id, names)
    return Truth(str(source), np.asarray(data.train.sig_id).astype(str), names, np.asarray(data.train.scored),
                 np.asarray(data.train.is_control, bool), np.asarray(data.test.sig_id).astype(str),
                 np.asarray(data.test.is_control, bool), y_test)


def _find_truth(run_dir: Path, models: dict[str, Path], multi: bool,
                data: str | Path | None) -> tuple[Truth | None, str]:
    """(the truth or None, a note saying why scores that need it are missing)."""
    if data is not None:
        source = str(data)
    else:
        # a workflow records its data; a blend folder has no manifest: its first model's
        base = run_dir if multi and (run_dir / layout.MANIFEST).exists() else next(iter(models.values()))
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
    return records.read_aligned(path, sig_id, names)


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
    m, cfg = _json(d / layout.METRICS), _json(d / layout.CONFIG)
    from_blend = (blend.get("models") or {}).get(name, {})
    seeds = cfg.get("seeds") or list((m.get("seeds") or {}).keys())
    folds = (cfg.get("cv") or {}).get("n_folds")
    sel = m.get("selection") or {}
    ll = as_number(m.get("log_loss"))
    weights = blend.get("weights") if isinstance(blend.get("weights"), dict) else {}
    return {
        "name": name, "model": m.get("model") or cfg.get("model") or "-",
        "profile": m.get("profile") or cfg.get("profile") or "-", "cv": (cfg.get("cv") or {}).get("scheme", "-"),
        "seeds_x_folds": f"{len(seeds)} x {folds}" if folds else "-",
        "selection": sel.get("policy") or "-", "optimistic": bool(sel.get("optimistic")),
        "log_loss": ll if ll is not None else as_number(from_blend.get("log_loss")),
        "log_loss_treated": as_number(m.get("log_loss_treated", from_blend.get("log_loss_treated"))),
        "test_log_loss": _test_score(d / layout.TEST_PREDICTIONS, truth),
        "weight": as_number(weights.get(name)) if weights else None,
        "prior": m.get("prior") if isinstance(m.get("prior"), dict) else None,
        "prior_oof": m.get("prior_oof") if isinstance(m.get("prior_oof"), dict) else None,
        "seeds": m.get("seeds") or {},
    }


def _fold_rows(d: Path, truth: Truth | None, curves: list[dict]) -> list[dict]:
    """Per fold: its rows, the model's OOF log loss on them, and the epochs its networks ran."""
    if truth is None or not (d / layout.FOLDS).exists() or not (d / layout.OOF_PREDICTIONS).exists():
        return []
    try:
        folds = np.load(d / layout.FOLDS, allow_pickle=False)
        oof = _aligned(d / layout.OOF_PREDICTIONS, truth.sig_id, truth.names)
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
    stages = d / layout.STAGES_DIR
    if not stages.is_dir():
        return out
    timings = _manifest(d).get("timings") or {}  # stage_<name>_seconds, in training order
    order = [k.removeprefix("stage_").removesuffix("_seconds") for k in timings if k.startswith("stage_")]
    for path in sorted(stages.glob(layout.FOLD_HISTORY_GLOB)):
        if not _visible(path, stages):
            continue
        stage, seed, fold = path.parts[-4], path.parts[-3], path.parts[-2]
        try:
            epochs = list(_json(path).get("epochs") or [])
            seed_n, fold_n = layout.seed_of(seed), layout.fold_of(fold)
        except ValueError:
            continue
        out.append({"stage": stage, "seed": seed_n, "fold": fold_n, "epochs": epochs})
    rank = {s: i for i, s in enumerate(order)}
    out.sort(key=lambda c: (rank.get(c["stage"], len(rank)), c["stage"], c["seed"], c["fold"]))
    return out


def _per_target(run_dir: Path, models: dict[str, Path], multi: bool, truth: Truth | None) -> dict:
    """Per-target OOF log loss of the blend (multi-model) or of the model, with the prior."""
    blend_csv = _blend_dir(run_dir) / layout.PER_TARGET_LOSS
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
            oof = _aligned(next(iter(models.values())) / layout.OOF_PREDICTIONS, truth.sig_id, truth.names)
        except (OSError, ValueError) as exc:
            return {"note": f"per-target losses could not be computed ({exc})"}
        prior = metrics.prior_predictions(truth.y, truth.is_control, len(truth.y))
        frame = pd.DataFrame({
            "model": metrics.per_target_log_loss(truth.y, metrics.zero_controls(oof, truth.is_control)),
            "prior": metrics.per_target_log_loss(truth.y, metrics.zero_controls(prior, truth.is_control))},
            index=pd.Index(truth.names, name="target"))
        folds = _run_folds(next(iter(models.values())), truth)
        if folds is not None:
            frame["prior_oof"] = metrics.per_target_log_loss(
                truth.y, metrics.oof_prior_predictions(truth.y, truth.is_control, folds))
    if column not in frame:
        return {"note": f"{blend_csv.name} has no {column!r} column"}
    frame = frame.sort_values(column, ascending=False)
    # OOF losses are compared with the prior out of fold when the run's folds are known
    key = "prior_oof" if "prior_oof" in frame else "prior"
    rows = [{"target": str(t), "value": float(r[column]), "prior": as_number(r.get(key))} for t, r in frame.iterrows()]
    return {"label": label, "rows": rows, "note": "",
            "prior_label": "out-of-fold prior" if key == "prior_oof" else "prior (in sample)"}


def _run_folds(d: Path, truth: Truth) -> np.ndarray | None:
    """A model run's folds (folds.npy, rows as in its oof_predictions.csv) in the order of
    the truth's training rows; None when missing or not matching."""
    try:
        folds = np.load(d / layout.FOLDS, allow_pickle=False)
        ids = pd.read_csv(d / layout.OOF_PREDICTIONS, usecols=[0], dtype=str).iloc[:, 0]
    except (OSError, ValueError):
        return None
    pos = pd.Index(ids).get_indexer(truth.sig_id)
    return folds[pos] if folds.shape == (len(ids),) and (pos >= 0).all() else None


def _evaluation(run_dir: Path, top: int = 15) -> dict | None:
    """The per-MoA trust section (``moakit evaluate``'s RUN/evaluation/), when it exists."""
    from moakit.runs import layout

    doc = _json(run_dir / layout.EVALUATION_DIR / layout.EVALUATION)
    if not doc.get("sets"):
        return None
    sets = []
    for key, s in doc["sets"].items():
        rows = [r for r in (doc.get("per_target") or {}).get(key, []) if r.get("positives")]
        sets.append({"name": key, **s, "best": rows[:top],
                     "flagged": [r["target"] for r in rows if r.get("trust") == "no better than shuffled"]})
    png = run_dir / layout.EVALUATION_DIR / layout.EVALUATION_PNG
    return {"sets": sets, "rule": doc.get("rule"), "bins": doc.get("calibration_bins"),
            "shuffled": doc.get("shuffled") or {}, "png": str(png) if png.exists() else None}


def _explanations(run_dir: Path, top: int = 10) -> list[dict]:
    """The saved ``moakit explain`` results (RUN/explain/), their top columns and deletion curves."""
    from moakit.explain import load_saved

    return [{**e, "top": e["top"][:top], "scores": None} for e in load_saved(run_dir)]


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
    mc = blend.get("mean_correlation") or {}
    from moakit.headline import nested_scores

    return {
        **nested_scores(blend),  # nested_log_loss (chosen weights), best_single_nested_log_loss
        # entries the profile left out, the profile's note on the weights, preset or search and why
        "skipped": blend.get("skipped"), "note": blend.get("note"), "choice": blend.get("choice"),
        "names": names, "method": chosen, "log_loss": blend.get("log_loss"),
        "log_loss_treated": blend.get("log_loss_treated"),
        "test_log_loss": _test_score(_blend_dir(run_dir) / layout.BLEND_TEST, truth),
        "methods": methods, "nested": nested, "best_single": blend.get("best_single"),
        "correlation": [{"name": n, "oof": (mc.get("oof") or {}).get(n), "test": (mc.get("test") or {}).get(n)}
                        for n in names] if mc.get("oof") else [],
    }


def _prior(rows: list[dict], blend: dict, truth: Truth | None) -> dict | None:
    """The per-target prior's scores: in sample and out of fold (the single model's own
    folds; the blend's blended out-of-fold prior) from the runs, test from the answers."""
    prior = next((r["prior"] for r in rows if r["prior"]), None) or blend.get("prior")
    prior_oof = (blend.get("prior_oof") if blend else (rows[0]["prior_oof"] if len(rows) == 1 else None)) or {}
    if not prior and truth is not None:
        pred = metrics.prior_predictions(truth.y, truth.is_control, len(truth.y))
        prior = metrics.score(truth.y, pred, truth.is_control)
    if not prior:
        return None
    out = {"log_loss": as_number(prior.get("log_loss")), "log_loss_treated": as_number(prior.get("log_loss_treated")),
           "oof_log_loss": as_number(prior_oof.get("log_loss")),
           "oof_log_loss_treated": as_number(prior_oof.get("log_loss_treated")), "test_log_loss": None}
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
        # OOF losses against the model's own out-of-fold prior (the in-sample one only for runs made
        # before it was recorded, and said so); test losses against the training means
        p = (r.get("prior_oof") or {}).get("log_loss")
        kind = "out-of-fold prior, same folds"
        if p is None:
            p, kind = (prior or {}).get("log_loss"), "in-sample prior: this run records no out-of-fold one"
        if p is not None and r["log_loss"] is not None and r["log_loss"] >= p:
            out.append({"model": r["name"], "text": f"no better than the per-target prior (OOF {r['log_loss']:.6f} "
                        f"vs {kind} {p:.6f}): it learned nothing usable (too few epochs or rows for this profile?)."})
        pt = (prior or {}).get("test_log_loss")
        if pt is not None and r.get("test_log_loss") is not None and r["test_log_loss"] >= pt:
            out.append({"model": r["name"], "text": f"no better than the per-target prior on the test rows (test "
                        f"{r['test_log_loss']:.6f} vs the training means' {pt:.6f})."})
    nested = (blend or {}).get("nested") or {}
    if "beats_best_single" in nested and not nested["beats_best_single"]:
        out.append({"model": "blend", "text": "the weight search does not beat the best single model under nested "
                    "evaluation: its in-sample gain is optimism."})
    return out


def _headline(rows: list[dict], prior: dict | None, blend: dict | None) -> list[str]:
    """The first screen's sentences (moakit.headline): what was left out and why, how the
    weights were chosen, models and blend against the prior and the best member, why
    drug-aware OOF is higher."""
    from moakit.headline import headline

    return headline({r["name"]: r for r in rows}, blend, (prior or {}).get("test_log_loss"))


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
    blend = _json(_blend_dir(run_dir) / layout.BLEND) if multi else {}
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
        "headline": _headline(rows, prior, blend_section) if multi else [],
        "folds": {name: _fold_rows(d, truth, curves[name]) for name, d in models.items()},
        "curves": curves,
        "per_target": _per_target(run_dir, models, multi, truth),
        "evaluation": _evaluation(run_dir),
        "explanations": _explanations(run_dir),
        "feature_maps": {name: [str(p) for p in _feature_maps(d)[:MAX_FEATURE_MAPS]] for name, d in models.items()},
        "heatmaps": [str(_blend_dir(run_dir) / f) for f in layout.CORRELATION_PNG.values()
                     if multi and (_blend_dir(run_dir) / f).exists()],
        "timings": _timings(models, multi, top, blend), "provenance": _provenance(models, multi, top),
        "model_dirs": {name: str(d) for name, d in models.items()},
    }
