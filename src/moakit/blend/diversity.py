"""Model diversity as in the write-up's "Model Diversity" section: the Pearson correlation of
two models' predictions per target (treated rows only), averaged over the targets; and its
heatmap."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from moakit.artifacts import atomic_file


def mean_target_correlation(preds: Sequence[np.ndarray], is_control: np.ndarray | None = None) -> np.ndarray:
    """(m x m) mean over targets of the Pearson correlation of two models' predictions.

    Rows are the treated rows (``is_control`` False); a target on which either model's
    predictions are constant is skipped for that pair. NaN where no target is left."""
    rows = slice(None) if is_control is None else ~np.asarray(is_control, bool)
    z, ok = [], []
    for p in preds:
        x = np.asarray(p, np.float64)[rows]
        varies = (x.max(axis=0, initial=-np.inf) > x.min(axis=0, initial=np.inf)) if len(x) else np.zeros(x.shape[1], bool)
        x = x - x.mean(axis=0)
        norm = np.sqrt((x * x).sum(axis=0))
        good = varies & (norm > 0)
        z.append(np.divide(x, norm, out=np.zeros_like(x), where=good))
        ok.append(good)
    m = len(preds)
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(a, m):
            both = ok[a] & ok[b]
            if both.any():
                r = np.einsum("ij,ij->j", z[a][:, both], z[b][:, both])
                out[a, b] = out[b, a] = float(np.clip(r, -1.0, 1.0).mean())
    return out


def plot_correlation(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str) -> Path:
    """A heatmap of a correlation matrix with its values written in the cells (PNG)."""
    import textwrap

    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    m = len(names)
    longest = max((len(str(n)) for n in names), default=1)
    size = max(4.0, 1.0 + 0.9 * m) + 0.07 * longest
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    try:
        finite = matrix[np.isfinite(matrix)]
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
        im = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlBu_r", vmin=vmin, vmax=1.0)
        ax.set_xticks(range(m), labels=list(names), rotation=45, ha="right")
        ax.set_yticks(range(m), labels=list(names))
        for i in range(m):
            for j in range(m):
                v = matrix[i, j]
                text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
                dark = np.isfinite(v) and (v > 0.85 or v < vmin + 0.15 * (1 - vmin))
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title("\n".join(textwrap.wrap(title, 40)), fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        fig.clear()  # a pyplot-free Figure is registered nowhere; free its artists
    with atomic_file(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


def offdiag_mean(c: np.ndarray) -> list[float | None]:
    """Per model, its mean correlation with the other models (None: no finite value)."""
    rows = []
    for i in range(len(c)):
        vals = [c[i, j] for j in range(len(c)) if j != i and np.isfinite(c[i, j])]
        rows.append(float(np.mean(vals)) if vals else None)
    return rows
