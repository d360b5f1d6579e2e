"""A trained run held in memory for explaining (:class:`LoadedRun`), its raw columns, and
the target's loss on edited copies of rows (what permutation and deletion measure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.runs import layout

_CHUNK_ROWS = 40_000  # rows per batched prediction of permuted / deleted copies


class ExplainError(ValueError):
    """A run, target or input that cannot be explained (the message says why)."""


# ----------------------------------------------------------------------------- the loaded run


@dataclass
class _Model:
    name: str
    dir: Path
    weight: float | np.ndarray  # 1.0 for a single-model run
    chain: object  # stages.StageChain
    features: dict = field(default_factory=dict)  # (stage index, seed) -> feature state
    estimators: dict = field(default_factory=dict)  # (stage index, seed) -> [fold estimators]


@dataclass
class LoadedRun:
    """A trained run (single model or blend) held in memory, predicting one target."""

    run_dir: Path
    models: list[_Model]
    scored: list[str]
    gene_names: list[str]
    cell_names: list[str]

    @property
    def members(self) -> list[tuple[int, int, int]]:
        """(model index, seed, fold) of every network of each model's last stage."""
        out = []
        for m, model in enumerate(self.models):
            last = len(model.chain.stages) - 1
            for seed in model.chain.seeds:
                out.extend((m, seed, k) for k in range(len(model.estimators[(last, seed)])))
        return out

    def member_weights(self, t: int) -> np.ndarray:
        """Weight of each member in the run's probability of target ``t``."""
        out = []
        for m, seed, k in self.members:
            model = self.models[m]
            w = model.weight if np.ndim(model.weight) == 0 else model.weight[t]
            n_last = len(model.estimators[(len(model.chain.stages) - 1, seed)])
            out.append(float(w) / (len(model.chain.seeds) * n_last))
        return np.asarray(out)

    def member_probs(self, ds: Dataset, t: int) -> np.ndarray:
        """(rows, members) probabilities of target ``t`` (numpy, from the saved artifacts)."""
        from moakit.stages import stage_blocks

        cols = []
        for model in self.models:
            chain, outputs = model.chain, {}
            last = len(chain.stages) - 1
            for i in range(len(chain.stages)):
                for seed in chain.seeds:
                    X = model.features[(i, seed)].transform(stage_blocks(ds, chain.meta(i, seed, outputs)))
                    preds = [est.predict_proba(X) for est in model.estimators[(i, seed)]]
                    if i == last:
                        cols.extend(p[:, t] for p in preds)
                    else:
                        outputs[(i, seed)] = np.mean(preds, axis=0).astype(np.float32)
        return np.stack(cols, axis=1).astype(np.float64)

    def predict(self, ds: Dataset, t: int) -> np.ndarray:
        return self.member_probs(ds, t) @ self.member_weights(t)


def open_run(run_dir: str | Path) -> LoadedRun:
    """Load a run folder (``moakit train``, ``moakit run`` or a blend folder) into memory.

    The one place that reads a run's layout (through :mod:`moakit.runs.predict`)."""
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError
    from moakit.models.checks import build_model
    from moakit.runs import predict as run_files
    from moakit.stages import StageChain, stage_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExplainError(f"{run_dir}: run folder not found")
    names, dirs, weights = run_files.model_dirs(run_dir)
    models: list[_Model] = []
    for name, model_dir in zip(names, dirs):
        w = 1.0 if weights is None else weights[name]
        if weights is not None and np.max(np.abs(w)) < run_files.NEGLIGIBLE_WEIGHT:
            continue
        run_files.check_model_dir(model_dir)
        config = run_files.run_config(model_dir)
        model = build_model(config)
        loaded = _Model(name, model_dir, w, StageChain(model, config.seeds))
        from moakit.models.estimators import load_estimator

        try:
            for i, stage in enumerate(loaded.chain.stages):
                for seed in config.seeds:
                    sdir = stage_dir(model_dir, stage, seed)
                    loaded.features[(i, seed)] = model.load_features(stage, sdir / layout.FEATURES_DIR)
                    loaded.estimators[(i, seed)] = [load_estimator(layout.estimator_dir(sdir, k))
                                                    for k in range(config.cv.n_folds)]
        except (PickleFormatError, StateError) as exc:
            raise ExplainError(str(exc)) from None
        models.append(loaded)
    columns = run_files.columns(dirs[0]) if (dirs[0] / layout.COLUMNS).exists() else {}
    return LoadedRun(run_dir, models, run_files.scored_names(dirs[0]),
                     list(columns.get("genes", schema.GENE_COLUMNS)), list(columns.get("cells", schema.CELL_COLUMNS)))


# ----------------------------------------------------------------------------- raw columns


def raw_columns(ds: Dataset) -> list[str]:
    """The raw columns explained: genes, cells, then cp_time / cp_dose when the data has them."""
    cp = [c for c in ("cp_time", "cp_dose") if len(column_vocab(ds, c)) > 1]
    return [*ds.gene_names, *ds.cell_names, *cp]


def column_vocab(ds: Dataset, column: str) -> tuple:
    vocab = getattr(ds, "vocab", None)
    if vocab is None:
        return schema.CP_TIMES if column == "cp_time" else schema.CP_DOSES
    return tuple(vocab.get(column, ()))


def column_info(ds: Dataset, gene_info=None) -> list[dict]:
    """Per raw column of ``ds``: its kind (gene / cell / treatment) and, where known, the
    gene's Entrez id and symbol (``gene_info``: a frame with column, entrez_id, symbol; else
    the organisers' lish-moa mapping) or the cell line's CCLE name (lish-moa mapping)."""
    from moakit.data.column_maps import lish_moa_cell_lines, lish_moa_gene_ids

    ids, symbols = lish_moa_gene_ids(), {}
    if gene_info is not None:
        ids = dict(zip(gene_info["column"], gene_info["entrez_id"]))
        symbols = {c: v for c, v in zip(gene_info["column"], gene_info["symbol"]) if isinstance(v, str) and v}
    cells = lish_moa_cell_lines()
    genes = set(ds.gene_names)
    out = []
    for c in raw_columns(ds):
        kind = "gene" if c in genes else "treatment" if c in ("cp_time", "cp_dose") else "cell"
        info: dict = {"column": c, "kind": kind}
        if kind == "gene":
            if c in ids:
                info["entrez_id"] = str(ids[c])
            if c in symbols:
                info["symbol"] = symbols[c]
        elif kind == "cell" and c in cells:
            info["ccle_name"] = cells[c]
        out.append(info)
    return out


# ----------------------------------------------------------------------------- edited copies


def _edited(ds: Dataset, edits: list[dict[int, np.ndarray]]) -> Dataset:
    """One Dataset of ``len(edits)`` copies of ``ds``, copy i with raw column j set to
    ``edits[i][j]`` (column indices as in :func:`raw_columns`)."""
    from dataclasses import replace

    n, B = len(ds), len(edits)
    n_g, n_c = len(ds.gene_names), len(ds.cell_names)
    cp = raw_columns(ds)[n_g + n_c:]
    genes, cells = np.tile(ds.genes, (B, 1)), np.tile(ds.cells, (B, 1))
    arrays = {"cp_time": np.tile(ds.cp_time, B), "cp_dose": np.tile(ds.cp_dose, B)}
    for i, edit in enumerate(edits):
        rows = slice(i * n, (i + 1) * n)
        for j, values in edit.items():
            if j < n_g:
                genes[rows, j] = values
            elif j < n_g + n_c:
                cells[rows, j - n_g] = values
            else:
                arrays[cp[j - n_g - n_c]][rows] = values
    return replace(ds, sig_id=np.tile(ds.sig_id, B), genes=genes, cells=cells, cp_type=np.tile(ds.cp_type, B),
                   cp_time=arrays["cp_time"], cp_dose=arrays["cp_dose"], scored=None, nonscored=None, drug_id=None)


def column_values(ds: Dataset, j: int) -> np.ndarray:
    n_g, n_c = len(ds.gene_names), len(ds.cell_names)
    if j < n_g:
        return ds.genes[:, j]
    if j < n_g + n_c:
        return ds.cells[:, j - n_g]
    return getattr(ds, raw_columns(ds)[j])


def edit_losses(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int,
            edits: list[dict[int, np.ndarray]]) -> np.ndarray:
    """(len(edits), members + 1): per edited copy of ``ds``, each member's then the run's
    (last column) log loss of target ``t`` against ``y``; without labels, minus the mean
    probability (so that, as a loss, it grows when the call weakens)."""
    n = len(ds)
    per = max(1, _CHUNK_ROWS // max(n, 1))
    w = run.member_weights(t)
    out = []
    for start in range(0, len(edits), per):
        chunk = edits[start:start + per]
        probs = run.member_probs(_edited(ds, chunk), t)
        probs = np.concatenate([probs, (probs @ w)[:, None]], axis=1).reshape(len(chunk), n, -1)
        if y is None:
            out.append(-probs.mean(axis=1))
            continue
        p = np.clip(probs, schema.EPS, 1 - schema.EPS)
        yy = np.asarray(y, np.float64)[None, :, None]
        out.append(-(yy * np.log(p) + (1 - yy) * np.log1p(-p)).mean(axis=1))
    return np.concatenate(out, axis=0)
