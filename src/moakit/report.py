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
manifest facts, the per-MoA trust section of ``moakit evaluate`` when RUN/evaluation/
exists; warnings for models no better than the prior and for ``oof``-selected
models. ``report.json`` beside index.html holds the collected dict. No external CSS or
JavaScript; images are files beside index.html.

The reading side is :mod:`moakit.report_data`; this module draws the figures and renders
the page.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from moakit.artifacts import atomic_dir
from moakit.report_data import ReportError, Truth, as_number, collect_report, load_truth
from moakit.runs import layout

__all__ = ["ReportError", "Truth", "collect_report", "load_truth", "render_html", "write_report"]

TEMPLATE = "report.html.j2"
HARDEST_TARGETS = 10


# --------------------------------------------------------------------------- figures


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # a pyplot-free Figure: nothing to close
    path.write_bytes(buf.getvalue())


def _plot_per_target(rows: list[dict], label: str, path: Path, prior_label: str = "prior") -> None:
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
        ax.plot(x, prior, ".", color="#d62728", markersize=3, label=f"{prior_label} (mean {np.nanmean(prior):.5f})")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_xlabel(f"{len(rows)} targets, sorted by {label} log loss")
    ax.set_ylabel("OOF log loss")
    ax.set_title(f"Per-target OOF log loss: {label} vs {prior_label}")
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


def _plot_models(rows: list[tuple[str, float]], prior: float | None, path: Path, prior_label: str = "prior") -> None:
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
        ax.axvline(prior, color="#d62728", ls="--", label=f"{prior_label} {prior:.5f}")
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
    figs: dict[str, Any] = {"model_scores": None, "per_target": None, "curves": {}, "heatmaps": [], "maps": [],
                            "evaluation": None}
    if report.get("evaluation") and report["evaluation"]["png"]:
        shutil.copyfile(report["evaluation"]["png"], tmp / layout.REPORT_EVALUATION_PNG)
        figs["evaluation"] = layout.REPORT_EVALUATION_PNG
    from moakit.explain import plot_deletion

    figs["explanations"] = {}
    for e in report.get("explanations") or []:
        f = layout.REPORT_DELETION_PNG.format(target=_safe_name(e["target"]), method=e["method"])
        if plot_deletion(e, tmp / f):
            figs["explanations"][f"{e['target']}.{e['method']}"] = f
    scores = [(r["name"], r["log_loss"]) for r in report["models"] if r["log_loss"] is not None]
    if report["blend"] and as_number(report["blend"]["log_loss"]) is not None:
        scores.append(("blend", float(report["blend"]["log_loss"])))
    if len(scores) > 1:
        p = report["prior"] or {}
        _plot_models(scores, p.get("oof_log_loss") or p.get("log_loss"), tmp / layout.REPORT_MODEL_SCORES_PNG,
                     "out-of-fold prior" if p.get("oof_log_loss") else "prior (in sample)")
        figs["model_scores"] = layout.REPORT_MODEL_SCORES_PNG
    if report["per_target"].get("rows"):
        _plot_per_target(report["per_target"]["rows"], report["per_target"]["label"],
                         tmp / layout.REPORT_PER_TARGET_PNG, report["per_target"].get("prior_label", "prior"))
        figs["per_target"] = layout.REPORT_PER_TARGET_PNG
    for name, curves in report["curves"].items():
        f = layout.REPORT_CURVES_PNG.format(name=_safe_name(name))
        if _plot_curves(curves, name, tmp / f):
            figs["curves"][name] = f
    captions = {layout.CORRELATION_PNG["oof"]: "OOF predictions (treated rows)",
                layout.CORRELATION_PNG["test"]: "test predictions (treated rows)"}
    for src in map(Path, report["heatmaps"]):
        shutil.copyfile(src, tmp / src.name)
        figs["heatmaps"].append({"file": src.name, "caption": captions.get(src.name, src.name)})
    for name, maps in report["feature_maps"].items():
        model_dir = Path(report["model_dirs"][name])
        for k, src in enumerate(map(Path, maps)):
            dst = layout.REPORT_FEATURE_MAP_PNG.format(name=_safe_name(name), k=k)
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
    out_dir = Path(out_dir) if out_dir is not None else layout.report_dir(run_dir)
    from moakit.validate import check_report_dir, clean_leftovers

    check_report_dir(out_dir)  # it is replaced whole: never a run, data or other folder
    clean_leftovers(out_dir.parent, target=out_dir.name)  # .report.*/ of a killed report
    report = collect_report(run_dir, data)
    with atomic_dir(out_dir) as tmp:
        figures = _figures(report, tmp, out_dir)
        (tmp / layout.REPORT_HTML).write_text(render_html(report, figures), encoding="utf-8")
        (tmp / layout.REPORT_JSON).write_text(json.dumps(_plain(report), indent=1) + "\n", encoding="utf-8")
    return out_dir / layout.REPORT_HTML
