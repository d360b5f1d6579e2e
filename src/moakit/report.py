"""A self-contained HTML report of a run: ``RUN/report/index.html`` plus its PNG files.

Works on a single-model run (the layout of :mod:`moakit.runner`) and on a multi-model run
(``RUN/models/<name>/`` single-model runs, ``RUN/blend/`` from :mod:`moakit.blend`). The
page shows per-model OOF log loss (all rows, treated rows, per seed), the prior baseline,
per-target OOF log loss (blend or best model against the prior), the blend weights per
search method, the model-correlation heatmaps, DeepInsight feature maps (any
``feature_map*.png`` a model wrote under its run folder), timings and the manifest facts.
No external CSS or JavaScript; images are files beside index.html.
"""

from __future__ import annotations

import html
import io
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moakit.artifacts import atomic_dir, read_json

FEATURE_MAP_GLOB = "feature_map*.png"
MAX_FEATURE_MAPS = 4  # per model

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}tr.best td{font-weight:bold;background:#f4fbf4}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.note{color:#666;font-size:.9em}.warn{color:#a33;font-weight:500}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;flex:1 1 420px}
figcaption{font-size:.85em;color:#555}code{background:#f5f5f5;padding:0 .2em}
"""


class ReportError(ValueError):
    """A folder that is not a moakit run."""


def _json(path: Path) -> dict:
    try:
        return read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return _e(value)


def _table(header: list[str], rows: list[list[Any]], left: int = 1, classes: list[str] | None = None) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # a pyplot-free Figure: nothing to close
    path.write_bytes(buf.getvalue())


# --------------------------------------------------------------------------- reading a run


def _models(run_dir: Path) -> tuple[dict[str, Path], bool]:
    """(model name -> single-model run folder, whether the run is multi-model)."""
    models_dir = run_dir / "models"
    if models_dir.is_dir():
        manifest = _json(run_dir / "manifest.json")
        order = list((manifest.get("models") or {}).keys()) or list(_json(run_dir / "blend" / "blend.json").get("names") or [])
        found = {p.name: p for p in sorted(models_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
        names = [n for n in order if n in found] + [n for n in found if n not in order]
        return {n: found[n] for n in names}, True
    if (run_dir / "metrics.json").exists() or (run_dir / "oof_predictions.csv").exists():
        config = _json(run_dir / "config.json")
        return {str(config.get("model") or run_dir.name): run_dir}, False
    raise ReportError(f"{run_dir}: not a moakit run (no metrics.json and no models/ folder)")


def _feature_maps(model_dir: Path) -> list[Path]:
    found = []
    for p in sorted(model_dir.rglob(FEATURE_MAP_GLOB)):
        rel = p.relative_to(model_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue  # temporary folders (an in-progress atomic write)
        if p.is_file():
            found.append(p)
    return found


def _per_target_single(model_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """Per-target OOF log loss of a single-model run (needs its data folder for the truth)."""
    from moakit import metrics
    from moakit.data.io import load

    from moakit.artifacts import resolve_recorded

    source = resolve_recorded(_json(model_dir / "manifest.json").get("data_source"), model_dir)
    if not source or not Path(source).exists():
        return None, f"the run's data folder ({source!r}) is not available, so per-target losses are not shown"
    try:
        data = load(source)
        oof = pd.read_csv(model_dir / "oof_predictions.csv")
        pos = pd.Index(np.asarray(data.train.sig_id).astype(str)).get_indexer(oof["sig_id"].astype(str))
        names = [str(c) for c in oof.columns[1:]]
        cols = [list(data.train.scored_names).index(c) for c in names]
        if (pos < 0).any():
            raise ValueError("OOF rows not in the data")
        y = data.train.scored[pos][:, cols]
        ctl = np.asarray(data.train.is_control, bool)[pos]
        pred = metrics.zero_controls(oof.iloc[:, 1:].to_numpy(np.float32), ctl)
        prior = metrics.zero_controls(metrics.prior_predictions(y, ctl, len(y)), ctl)
        frame = pd.DataFrame({"model": metrics.per_target_log_loss(y, pred),
                              "prior": metrics.per_target_log_loss(y, prior)}, index=pd.Index(names, name="target"))
        return frame, ""
    except Exception as exc:  # a report must not fail on an unreadable data folder
        return None, f"per-target losses could not be computed ({type(exc).__name__}: {exc})"


def _plot_per_target(frame: pd.DataFrame, column: str, label: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    frame = frame.sort_values(column, ascending=False)
    x = np.arange(len(frame))
    top = min(20, len(frame))
    fig = Figure(figsize=(13, 4.8))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax.bar(x, frame[column].to_numpy(), width=1.0, color="#3b75af", label=f"{label} (mean {frame[column].mean():.5f})")
    if "prior" in frame:
        ax.plot(x, frame["prior"].to_numpy(), ".", color="#d62728", markersize=3,
                label=f"prior (mean {frame['prior'].mean():.5f})")
    ax.set_xlim(-0.5, len(frame) - 0.5)
    ax.set_xlabel(f"{len(frame)} targets, sorted by {label} log loss")
    ax.set_ylabel("OOF log loss")
    ax.set_title(f"Per-target OOF log loss: {label} vs prior")
    ax.legend(loc="upper right")
    hard = frame.iloc[:top]
    yy = np.arange(top)
    ax2.barh(yy, hard[column].to_numpy(), color="#3b75af")
    if "prior" in hard:
        ax2.plot(hard["prior"].to_numpy(), yy, "|", color="#d62728", markersize=10, mew=2)
    ax2.set_yticks(yy, labels=[str(t)[:40] for t in hard.index], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_title(f"hardest {top} (red: prior)", fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)


def _plot_models(rows: list[tuple[str, float]], prior: float | None, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(8, 0.5 * len(rows) + 1.5))
    ax = fig.subplots()
    names = [r[0] for r in rows]
    vals = [r[1] for r in rows]
    colors = ["#2ca02c" if n == "blend" else "#3b75af" for n in names]
    ax.barh(np.arange(len(rows)), vals, color=colors)
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


# --------------------------------------------------------------------------- the report


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``out_dir`` (default ``RUN/report``) with index.html; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    models, multi = _models(run_dir)
    top_manifest = _json(run_dir / "manifest.json")
    blend_dir = run_dir / "blend"
    blend = _json(blend_dir / "blend.json") if multi else {}

    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
        parts: list[str] = []
        title = f"moakit report: {run_dir.name}"
        parts.append(f"<h1>{_e(title)}</h1>")
        parts.append(f'<p class="note">Run folder <code>{_e(run_dir.resolve())}</code>; '
                     f"{'multi-model run' if multi else 'single-model run'}; report written "
                     f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>")

        # ---- per-model scores
        info: dict[str, dict] = {}
        for name, d in models.items():
            info[name] = {"metrics": _json(d / "metrics.json"), "manifest": _json(d / "manifest.json"),
                          "config": _json(d / "config.json")}
        weights = blend.get("weights") if isinstance(blend.get("weights"), dict) else {}
        rows, score_rows, classes = [], [], []
        best = blend.get("best_single")
        for name, i in info.items():
            m, cfg = i["metrics"], i["config"]
            seeds = cfg.get("seeds") or list((m.get("seeds") or {}).keys())
            folds = (cfg.get("cv") or {}).get("n_folds")
            ll = m.get("log_loss")
            if ll is None:
                ll = (blend.get("models") or {}).get(name, {}).get("log_loss")
            llt = m.get("log_loss_treated")
            if llt is None:
                llt = (blend.get("models") or {}).get(name, {}).get("log_loss_treated")
            rows.append([_e(name), _e(m.get("model") or cfg.get("model") or "-"), _e(m.get("profile") or cfg.get("profile") or "-"),
                         _e((cfg.get("cv") or {}).get("scheme", "-")),
                         f"{len(seeds)} x {folds}" if folds else "-", _fmt(ll), _fmt(llt),
                         _fmt(weights.get(name), 3) if weights else "-"])
            classes.append("")
            if isinstance(ll, (int, float)):
                score_rows.append((name, float(ll)))
        prior = None
        for i in info.values():
            prior = prior or (i["metrics"].get("prior") or None)
        prior = prior or blend.get("prior")
        if blend:
            rows.append(["<b>blend</b>", _e(blend.get("method", "")), "", "", "", _fmt(blend.get("log_loss")),
                         _fmt(blend.get("log_loss_treated")), "1.000"])
            classes.append("best")
            if isinstance(blend.get("log_loss"), (int, float)):
                score_rows.append(("blend", float(blend["log_loss"])))
        if prior:
            rows.append(["prior (baseline)", "target means", "", "", "", _fmt(prior.get("log_loss")),
                         _fmt(prior.get("log_loss_treated")), "-"])
            classes.append("")
        parts.append("<h2>OOF log loss</h2>")
        for name, i in info.items():
            m = i["metrics"]
            sel = m.get("selection") or {}
            if sel.get("optimistic"):
                parts.append(f'<p class="warn"><b>{_e(name)}</b>: selection policy <code>oof</code> (epochs chosen '
                             "on the rows that give its OOF predictions, as the winners did): its OOF log loss is "
                             "optimistic.</p>")
            if prior and isinstance(m.get("log_loss"), (int, float)) and m["log_loss"] >= prior.get("log_loss", math.inf):
                parts.append(f'<p class="warn"><b>{_e(name)}</b> is no better than the per-target prior '
                             f"(OOF {_fmt(m['log_loss'])} vs prior {_fmt(prior.get('log_loss'))}): it learned "
                             "nothing usable (too few epochs or rows for this profile?).</p>")
        parts.append('<p class="note">Mean column-wise log loss of the out-of-fold predictions: on all '
                     "training rows (control rows predicted 0, the competition metric) and on treated rows "
                     "only. The prior predicts each target's mean over the treated training rows."
                     + (f" Best single model: <b>{_e(best)}</b>." if best else "") + "</p>")
        parts.append(_table(["model", "model type", "profile", "CV", "seeds x folds", "log loss",
                             "log loss (treated)", "blend weight"], rows, left=5, classes=classes))
        if len(score_rows) > 1:
            _plot_models(score_rows, prior.get("log_loss") if prior else None, tmp / "model_scores.png")
            parts.append('<img src="model_scores.png" alt="OOF log loss per model">')

        # ---- per seed
        seed_rows = []
        for name, i in info.items():
            for seed, sc in (i["metrics"].get("seeds") or {}).items():
                seed_rows.append([_e(name), _e(seed), _fmt(sc.get("log_loss")), _fmt(sc.get("log_loss_treated"))])
        if seed_rows:
            parts.append("<h2>OOF log loss per seed</h2>")
            parts.append('<p class="note">Each seed\'s OOF predictions alone; the model\'s score above is '
                         "that of the mean over its seeds.</p>")
            parts.append(_table(["model", "seed", "log loss", "log loss (treated)"], seed_rows, left=2))

        # ---- per target
        parts.append("<h2>Per-target OOF log loss</h2>")
        per_target, label, column, note = None, "", "", ""
        if blend and (blend_dir / "per_target_log_loss.csv").exists():
            per_target = pd.read_csv(blend_dir / "per_target_log_loss.csv", index_col=0)
            label, column = "blend", "blend"
        elif not multi:
            name, d = next(iter(models.items()))
            per_target, note = _per_target_single(d)
            label, column = name, "model"
        else:
            note = "no blend/per_target_log_loss.csv in this run"
        if per_target is not None and column in per_target:
            _plot_per_target(per_target, column, label, tmp / "per_target_log_loss.png")
            parts.append('<img src="per_target_log_loss.png" alt="per-target OOF log loss">')
            worst = per_target.sort_values(column, ascending=False).head(10)
            trows = [[_e(t), _fmt(r[column]), _fmt(r["prior"]) if "prior" in r else "-"] for t, r in worst.iterrows()]
            parts.append("<p>Hardest targets:</p>" + _table(["target", f"{label} log loss", "prior log loss"], trows))
        else:
            parts.append(f'<p class="note">{_e(note)}</p>')

        # ---- blend
        if blend:
            parts.append("<h2>Blend weights</h2>")
            names = blend.get("names") or list(models)
            header = ["method", *names, "OOF log loss", "log loss (treated)", "evaluations", "seconds"]
            timings = blend.get("timings") or {}
            brows, bclasses = [], []
            for mth, s in (blend.get("methods") or {}).items():
                w = s.get("weights") or {}
                secs = timings.get(f"{mth}_seconds", s.get("seconds"))
                brows.append([_e(mth), *[_fmt(w.get(n), 3) for n in names], _fmt(s.get("log_loss")),
                              _fmt(s.get("log_loss_treated")), _e(s.get("n_evals", "-")), _fmt(secs, 1)])
                bclasses.append("best" if mth == blend.get("method") else "")
            if blend.get("preset"):
                p = blend["preset"]
                w = p.get("weights") or {}
                brows.append([f"preset {_e(p.get('name'))}", *[_fmt(w.get(n), 3) for n in names],
                              _fmt(p.get("log_loss")), _fmt(p.get("log_loss_treated")), "-", "-"])
                bclasses.append("best" if str(blend.get("method", "")).startswith("preset:") else "")
            parts.append(f"<p>Chosen: <b>{_e(blend.get('method'))}</b>, blended OOF log loss "
                         f"<b>{_fmt(blend.get('log_loss'))}</b>. Weights are non-negative and sum to 1; the "
                         "blend is a weighted average of the models' probabilities.</p>")
            parts.append(_table(header, brows, classes=bclasses))
            nested = blend.get("nested")
            if nested:
                nrows = [[_e(m), _fmt(s.get("log_loss")), _fmt(s.get("log_loss_treated"))]
                         for m, s in nested.get("methods", {}).items()]
                parts.append(f"<p>Nested evaluation ({_e(nested.get('n_folds'))} parts): each part is scored with "
                             "weights searched on the other parts only, so these numbers are honest where the "
                             "in-sample ones above are not. <code>best_single</code> picks the best single model "
                             "the same way.</p>")
                parts.append(_table(["method", "nested OOF log loss", "treated rows"], nrows))
                if "beats_best_single" in nested and not nested["beats_best_single"]:
                    parts.append('<p class="warn">The weight search does not beat the best single model under '
                                 "nested evaluation: its in-sample gain is optimism.</p>")
            mc = blend.get("mean_correlation") or {}
            if mc.get("oof"):
                crow = [[_e(n), _fmt(mc["oof"].get(n), 3), _fmt((mc.get("test") or {}).get(n), 3)] for n in names]
                parts.append("<p>Mean correlation of each model with the other models:</p>")
                parts.append(_table(["model", "OOF", "test"], crow))

        # ---- diversity
        heatmaps = [(f, cap) for f, cap in (("correlation_oof.png", "OOF predictions (treated rows)"),
                                            ("correlation_test.png", "test predictions (treated rows)"))
                    if (blend_dir / f).exists()]
        if heatmaps:
            parts.append("<h2>Model diversity</h2>")
            parts.append('<p class="note">Pearson correlation of two models\' predictions per target on '
                         "treated rows, averaged over targets (the write-up's \"mean of target-wise correlation "
                         "coefficients\"; its Figures 12-13).</p><div class=\"grid\">")
            for f, cap in heatmaps:
                shutil.copyfile(blend_dir / f, tmp / f)
                parts.append(f'<figure><img src="{f}" alt="{_e(cap)}"><figcaption>{_e(cap)}</figcaption></figure>')
            parts.append("</div>")

        # ---- feature maps
        maps = []
        for name, d in models.items():
            # The DeepInsight model saves its map per stage-seed (…/features/feature_map.png);
            # the maps of seeds differ little: show a few.
            for k, src in enumerate(_feature_maps(d)[:MAX_FEATURE_MAPS]):
                dst = f"deepinsight_{name}_{k}.png"
                shutil.copyfile(src, tmp / dst)
                if out_dir.resolve() in src.resolve().parents:
                    # A map the model itself put in this report folder: keep it there.
                    shutil.copyfile(src, tmp / src.name)
                maps.append((dst, f"{name}: {src.relative_to(d)}"))
        if maps:
            parts.append("<h2>DeepInsight feature maps</h2><div class=\"grid\">")
            for f, cap in maps:
                parts.append(f'<figure><img src="{_e(f)}" alt="{_e(cap)}"><figcaption>{_e(cap)}</figcaption></figure>')
            parts.append("</div>")

        # ---- timings
        trows = []
        wf_models = top_manifest.get("models") if multi else None
        for name, i in info.items():
            t = i["manifest"].get("timings") or {}
            stages = ", ".join(f"{k.removeprefix('stage_').removesuffix('_seconds')} {v:.1f}"
                               for k, v in t.items() if k.startswith("stage_") and isinstance(v, (int, float)))
            wall = (wf_models or {}).get(name, {}).get("seconds") if isinstance(wf_models, dict) else None
            trows.append([_e(name), _e(stages or "-"), _fmt(t.get("total_seconds"), 1), _fmt(wall, 1)])
        if blend:
            bt = blend.get("timings") or {}
            trows.append(["blend", _e(", ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in bt.items()
                                                 if k != "total_seconds")), _fmt(bt.get("total_seconds"), 1), "-"])
        parts.append("<h2>Timings (seconds)</h2>")
        parts.append(_table(["model", "stages", "training total", "wall (workflow)"], trows))
        if top_manifest.get("total_seconds") is not None and multi:
            parts.append(f"<p>Whole workflow: {_fmt(top_manifest.get('total_seconds'), 1)} s.</p>")

        # ---- manifest facts
        parts.append("<h2>Provenance</h2>")
        facts = []
        base = top_manifest if top_manifest else next(iter(info.values()))["manifest"]
        for key in ("kind", "status", "config_source", "profile", "model", "data_source", "data_fingerprint",
                    "n_train", "n_test", "executor", "created", "updated"):
            if key in base:
                facts.append([_e(key), _e(base[key])])
        versions = dict(base.get("versions") or {})
        for key in ("moakit_version", "python", "torch", "numpy", "scikit_learn"):
            if key in base:
                versions.setdefault(key.removesuffix("_version"), base[key])
        for k, v in versions.items():
            facts.append([_e(f"version: {k}"), _e(v)])
        if facts:
            parts.append(_table(["fact", "value"], facts, left=2))
        if multi:
            mrows = []
            for name, i in info.items():
                man = i["manifest"]
                mrows.append([_e(name), _e(man.get("status", "-")), _e(man.get("data_fingerprint", "-")),
                              _e(man.get("moakit_version", "-")), _e(man.get("torch", "-")),
                              _e(man.get("created", "-"))])
            parts.append(_table(["model", "status", "data fingerprint", "moakit", "torch", "created"], mrows, left=6))

        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out_dir / "index.html"
