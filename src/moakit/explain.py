"""Which raw input columns drive a trained run's call of one target.

``moakit explain RUN --target NAME`` / :meth:`moakit.MoAModel.explain` attribute one target's
predicted probability to each RAW input column: every gene, every cell line, cp_time and
cp_dose (cp_type is not explained: control rows are predicted 0 by design).

Two methods:

* ``ig``: Captum's Integrated Gradients through the whole fitted model: each stage's
  feature pipeline rebuilt in torch (:mod:`moakit.features.differentiable`: quantile
  transforms, PCA, factor analysis, scalers, row statistics), each network, the fold and
  seed means, the stacked stages' meta-features and a blend's weights. Non-differentiable
  steps (k-means one-hot, UMAP, cp categories) are held constant at the explained row's
  value; the result lists them (``held_constant``). Baseline: the mean profile of the
  control rows of the reference data (else of its treated rows); cp one-hots at their
  reference mean. Networks only (every weighted model of a blend must be one).
* ``permutation``: any model, blends included: the increase of the target's log loss when
  one column (or a group) is shuffled across held-out labelled rows (drugs unseen in
  training: a data folder's ``answers/``), averaged over repeats; its cost is printed.

Both explain the probability, a linear function of the networks' (members') probabilities,
so the run's attribution is exactly the weighted sum of its members' (one member = one
network of the last stage: a seed x fold). The members' attributions give the
**stability** (mean pairwise Spearman correlation across folds within a seed, and across
seed means). **Faithfulness**: a deletion curve, the target's log loss as the top-k
columns are set to their baseline, against k random columns.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moakit.data import schema
from moakit.data.dataset import Dataset
from moakit.runs import layout, records

METHODS = ("ig", "permutation")
DELETION_KS = (1, 2, 5, 10, 20, 50, 100, 200)
EXPLAIN_DIR = layout.EXPLAIN_DIR  # RUN/explain/<target>.<method>.json
_CHUNK_ROWS = 40_000  # rows per batched prediction of permuted / deleted copies


class ExplainError(ValueError):
    """A run, target or input that cannot be explained (the message says why)."""


# ----------------------------------------------------------------------------- the loaded run


@dataclass
class _Model:
    name: str
    dir: Path
    weight: float | np.ndarray  # 1.0 for a single-model run
    chain: object  # runner.StageChain
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
        from moakit.runner import _stage_blocks

        cols = []
        for model in self.models:
            chain, outputs = model.chain, {}
            last = len(chain.stages) - 1
            for i in range(len(chain.stages)):
                for seed in chain.seeds:
                    X = model.features[(i, seed)].transform(_stage_blocks(ds, chain.meta(i, seed, outputs)))
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

    The one place that reads a run's layout (through :mod:`moakit.inference`)."""
    from moakit import inference, runner
    from moakit.artifacts import PickleFormatError
    from moakit.features.safe_state import StateError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExplainError(f"{run_dir}: run folder not found")
    names, dirs, weights = inference._model_dirs(run_dir)
    models: list[_Model] = []
    for name, model_dir in zip(names, dirs):
        w = 1.0 if weights is None else weights[name]
        if weights is not None and np.max(np.abs(w)) < inference.NEGLIGIBLE_WEIGHT:
            continue
        inference._check_model_dir(model_dir)
        config = inference._config(model_dir)
        model = runner.build_model(config)
        loaded = _Model(name, model_dir, w, runner.StageChain(model, config.seeds))
        from moakit.models.estimators import load_estimator

        try:
            for i, stage in enumerate(loaded.chain.stages):
                for seed in config.seeds:
                    sdir = runner.stage_dir(model_dir, stage, seed)
                    loaded.features[(i, seed)] = model.load_features(stage, sdir / layout.FEATURES_DIR)
                    loaded.estimators[(i, seed)] = [load_estimator(layout.estimator_dir(sdir, k))
                                                    for k in range(config.cv.n_folds)]
        except (PickleFormatError, StateError) as exc:
            raise ExplainError(str(exc)) from None
        models.append(loaded)
    columns = inference._columns(dirs[0]) if (dirs[0] / layout.COLUMNS).exists() else {}
    return LoadedRun(run_dir, models, inference._scored_names(dirs[0]),
                     list(columns.get("genes", schema.GENE_COLUMNS)), list(columns.get("cells", schema.CELL_COLUMNS)))


# ----------------------------------------------------------------------------- raw columns


def raw_columns(ds: Dataset) -> list[str]:
    """The raw columns explained: genes, cells, then cp_time / cp_dose when the data has them."""
    cp = [c for c in ("cp_time", "cp_dose") if len(_vocab(ds, c)) > 1]
    return [*ds.gene_names, *ds.cell_names, *cp]


def _vocab(ds: Dataset, column: str) -> tuple:
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


def _column_values(ds: Dataset, j: int) -> np.ndarray:
    n_g, n_c = len(ds.gene_names), len(ds.cell_names)
    if j < n_g:
        return ds.genes[:, j]
    if j < n_g + n_c:
        return ds.cells[:, j - n_g]
    return getattr(ds, raw_columns(ds)[j])


def _losses(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int,
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


# ----------------------------------------------------------------------------- permutation


def permutation_importance(run: LoadedRun, ds: Dataset, y: np.ndarray, t: int, n_repeats: int = 2,
                           seed: int = 0, groups: dict[str, list[int]] | None = None) -> dict:
    """Increase of target ``t``'s log loss on the labelled rows ``ds`` / ``y`` when a raw
    column (or each group of ``groups``: name -> column indices) is shuffled across rows,
    averaged over ``n_repeats`` shuffles; per member too. Meaningful only on rows the run
    never saw (held-out drugs): on training rows it measures memorisation."""
    t0 = time.perf_counter()
    units = groups if groups is not None else {c: [j] for j, c in enumerate(raw_columns(ds))}
    rng = np.random.default_rng(seed)
    edits: list[dict[int, np.ndarray]] = [{}]
    for _ in range(n_repeats):
        for cols in units.values():
            perm = rng.permutation(len(ds))
            edits.append({j: _column_values(ds, j)[perm] for j in cols})
    losses = _losses(run, ds, y, t, edits)
    base, rest = losses[0], losses[1:].reshape(n_repeats, len(units), -1)
    increase = (rest - base[None, None, :]).mean(axis=0)  # (units, members + 1)
    return {"scores": increase[:, -1], "member_scores": increase[:, :-1].T, "base_loss": float(base[-1]),
            "seconds": time.perf_counter() - t0, "rows_predicted": len(edits) * len(ds)}


# ----------------------------------------------------------------------------- integrated gradients


class _TorchFeatures:
    """A stage's fitted feature state (a Pipeline, or a stacked [base | own]) in torch."""

    def __init__(self, state) -> None:
        from moakit.features.differentiable import TorchPipeline
        from moakit.features.pipeline import Pipeline
        from moakit.models.stacked import StackedFeatures

        if isinstance(state, Pipeline):
            parts = [state]
        elif isinstance(state, StackedFeatures):
            parts = ([state.base] if state.base is not None else []) + [state.own]
        else:
            raise ExplainError(f"integrated gradients cannot go through a {type(state).__name__} feature state; "
                               "use --method permutation")
        self.parts = [(p, TorchPipeline(p)) for p in parts]

    @property
    def held_constant(self) -> list[str]:
        return [h for _, tp in self.parts for h in tp.held_constant]

    def constants(self, blocks) -> list[dict]:
        from moakit.features.differentiable import replay_numpy

        return [replay_numpy(p, blocks, tp.constant_keys)[1] for p, tp in self.parts]

    def __call__(self, blocks, constants: list[dict]):
        import torch

        return torch.cat([tp(blocks, c) for (_, tp), c in zip(self.parts, constants)], dim=1)


def _networks(estimators: list) -> list:
    from moakit.models.base import TorchEstimator

    nets = []
    for est in estimators:
        if not isinstance(est, TorchEstimator) or est.transform is not None:
            raise ExplainError(f"integrated gradients needs plain torch networks, not {type(est).__name__} "
                               "(TabNet, DeepInsight and 1D-CNN models are not supported); use --method permutation")
        est.module.eval()
        nets.append(est.module)
    return nets


def _needed(chain, seed: int) -> list[tuple[int, int]]:
    """The (stage, seed) outputs the last stage of ``seed`` depends on, in stage order."""
    todo, seen = [(len(chain.stages) - 1, seed)], set()
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(chain.upstream(*key))
    return sorted(seen)


class _Differentiable:
    """The run's members as torch functions of the raw blocks (g, c, cp), with the
    non-differentiable steps' outputs for the explained rows held constant."""

    def __init__(self, run: LoadedRun, ds: Dataset) -> None:
        from moakit.runner import _stage_blocks

        self.run, self.feats, self.nets, self.consts = run, {}, {}, {}
        for m, model in enumerate(run.models):
            outputs = {}
            for i in range(len(model.chain.stages)):
                for seed in model.chain.seeds:
                    state = model.features[(i, seed)]
                    self.feats[(m, i, seed)] = tf = _TorchFeatures(state)
                    self.nets[(m, i, seed)] = _networks(model.estimators[(i, seed)])
                    blocks = _stage_blocks(ds, model.chain.meta(i, seed, outputs))
                    self.consts[(m, i, seed)] = tf.constants(blocks)
                    X = state.transform(blocks)
                    outputs[(i, seed)] = np.mean([e.predict_proba(X) for e in model.estimators[(i, seed)]],
                                                 axis=0).astype(np.float32)
        self.held_constant = sorted({h for tf in self.feats.values() for h in tf.held_constant})

    def constant_tensors(self) -> tuple[list, dict]:
        """(flat list of constant tensors, key -> (part, step, block) -> position)."""
        import torch

        flat, index = [], {}
        for key, parts in self.consts.items():
            index[key] = []
            for part in parts:
                index[key].append({})
                for k, v in part.items():
                    index[key][-1][k] = len(flat)
                    flat.append(torch.as_tensor(v))
        return flat, index

    def member(self, member: tuple[int, int, int], t: int, index: dict):
        """forward(g, c, cp, cp_codes, *constants) -> (rows,) probability of target t."""
        import torch

        m, seed_last, k = member
        chain = self.run.models[m].chain
        last = len(chain.stages) - 1
        needed = _needed(chain, seed_last)

        def forward(g, c, cp, codes, *flat):
            base = {"g": g, "c": c, "cp": cp, "cp_codes": codes}
            outputs = {}
            for i, seed in needed:
                blocks = dict(base)
                ups = chain.upstream(i, seed)
                if ups:
                    blocks["meta"] = torch.stack([outputs[u] for u in ups]).mean(dim=0)
                consts = [{key: flat[pos] for key, pos in part.items()} for part in index[(m, i, seed)]]
                X = self.feats[(m, i, seed)](blocks, consts)
                if i == last and seed == seed_last:
                    return torch.sigmoid(self.nets[(m, i, seed)][k](X)[:, t])
                outputs[(i, seed)] = torch.stack([torch.sigmoid(net(X)) for net in self.nets[(m, i, seed)]]).mean(dim=0)
            raise AssertionError("the member's own stage was not reached")

        return forward


def integrated_gradients(run: LoadedRun, ds: Dataset, t: int, baseline: dict[str, np.ndarray],
                         n_steps: int = 32) -> dict:
    """Integrated Gradients of target ``t``'s probability for each row of ``ds``: per member
    (rows, raw columns) and for the run (their weighted sum), baseline ``baseline`` (g, c, cp
    rows), plus the completeness check (sum of attributions vs f(x) - f(baseline))."""
    import torch
    from captum.attr import IntegratedGradients

    from moakit.runner import _stage_blocks

    t0 = time.perf_counter()
    diff = _Differentiable(run, ds)
    flat, index = diff.constant_tensors()
    blocks = _stage_blocks(ds, None)
    x = tuple(torch.as_tensor(blocks[b]) for b in ("g", "c", "cp"))
    b = tuple(torch.as_tensor(np.broadcast_to(baseline[name], blocks[name].shape).copy()) for name in ("g", "c", "cp"))
    codes = torch.as_tensor(blocks["cp_codes"])
    n_times = len(_vocab(ds, "cp_time"))
    n_cp = len(raw_columns(ds)) - len(ds.gene_names) - len(ds.cell_names)
    per_member, gaps = [], []
    for member in run.members:
        fn = diff.member(member, t, index)
        ig = IntegratedGradients(fn)
        attr = ig.attribute(x, baselines=b, additional_forward_args=(codes, *flat), n_steps=n_steps,
                            internal_batch_size=4096)
        g, c, cp = (a.detach().numpy().astype(np.float64) for a in attr)
        treat = [cp[:, :n_times].sum(axis=1), cp[:, n_times:].sum(axis=1)][:n_cp] if n_cp else []
        per_member.append(np.concatenate([g, c, *[v[:, None] for v in treat]], axis=1))
        with torch.no_grad():
            gaps.append((fn(*x, codes, *flat) - fn(*b, codes, *flat)).numpy().astype(np.float64))
    w = run.member_weights(t)
    members = np.stack(per_member)  # (members, rows, columns)
    total = np.tensordot(w, members, axes=1)
    gap = np.asarray(gaps).T @ w
    return {"rows": total, "members": members, "gap": gap, "completeness_error": np.abs(total.sum(axis=1) - gap),
            "held_constant": diff.held_constant, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- stability, deletion


def stability(member_scores: np.ndarray, members: list[tuple[int, int, int]], top: int = 20) -> dict:
    """Rank agreement of the members' attributions: mean pairwise Spearman correlation (over
    all columns) and overlap of the top-``top`` columns, across the folds of a seed and
    across seed means (None where there is only one)."""
    from itertools import combinations

    from scipy.stats import spearmanr

    def agree(vectors: list[np.ndarray]) -> dict | None:
        if len(vectors) < 2:
            return None
        rho, overlap = [], []
        for a, b in combinations(vectors, 2):
            rho.append(float(spearmanr(a, b).statistic))
            overlap.append(len(set(np.argsort(-a)[:top]) & set(np.argsort(-b)[:top])) / top)
        return {"spearman": float(np.nanmean(rho)), f"top{top}_overlap": float(np.mean(overlap)), "n": len(vectors)}

    by_seed: dict[tuple[int, int], list[np.ndarray]] = {}
    for (m, seed, _), v in zip(members, member_scores):
        by_seed.setdefault((m, seed), []).append(v)
    folds = [agree(v) for v in by_seed.values()]
    folds = [f for f in folds if f is not None]
    return {"folds": ({"spearman": float(np.mean([f["spearman"] for f in folds])),
                       f"top{top}_overlap": float(np.mean([f[f"top{top}_overlap"] for f in folds])),
                       "n": folds[0]["n"]} if folds else None),
            "seeds": agree([np.mean(v, axis=0) for v in by_seed.values()])}


def deletion_curve(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int, order: np.ndarray,
                   baseline_values: list, n_random: int = 3, seed: int = 0) -> dict:
    """The target's loss on ``ds`` (log loss against ``y``; without labels, minus the mean
    probability) as the first k columns of ``order`` are set to their baseline, against k
    random columns (mean of ``n_random`` orders), for k in :data:`DELETION_KS`."""
    n_cols = len(order)
    ks = [k for k in DELETION_KS if k <= n_cols]
    rng = np.random.default_rng(seed)
    orders = [np.asarray(order)] + [rng.permutation(n_cols) for _ in range(n_random)]
    n = len(ds)
    edits = [{}] + [{int(j): np.full(n, baseline_values[j]) for j in o[:k]} for o in orders for k in ks]
    losses = _losses(run, ds, y, t, edits)[:, -1]
    grid = losses[1:].reshape(len(orders), len(ks))
    return {"metric": "log_loss" if y is not None else "minus_mean_probability", "k": [0, *ks],
            "top": [float(losses[0]), *map(float, grid[0])],
            "random": [float(losses[0]), *map(float, grid[1:].mean(axis=0))]}


# ----------------------------------------------------------------------------- the whole explanation


def _baseline(reference: Dataset) -> tuple[dict[str, np.ndarray], list, str]:
    """(baseline blocks g / c / cp as (1, width) rows, per raw column baseline values, what
    it is): the control rows' mean profile when the reference has controls, else the mean of
    its rows; cp_time / cp_dose at their most frequent value (one-hot at the mean)."""
    from moakit.runner import _stage_blocks

    ctl = reference.is_control
    rows = reference.subset(ctl) if ctl.sum() >= 2 else reference
    what = (f"mean of {int(ctl.sum())} control rows" if ctl.sum() >= 2 else f"mean of {len(reference)} rows")
    blocks = _stage_blocks(rows, None)
    base = {b: blocks[b].astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32) for b in ("g", "c", "cp")}
    values = [*base["g"][0], *base["c"][0]]
    for c in raw_columns(reference)[len(reference.gene_names) + len(reference.cell_names):]:
        values.append(int(np.bincount(getattr(rows, c).astype(np.int64)).argmax()))
    return base, values, what


def resolve_target(run: LoadedRun, target: str) -> int:
    if target in run.scored:
        return run.scored.index(target)
    close = difflib.get_close_matches(target, run.scored, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ExplainError(f"unknown target {target!r}: the run predicts {len(run.scored)} targets{hint}")


def _explained_rows(run: LoadedRun, ds: Dataset, y: np.ndarray | None, t: int, max_rows: int,
                    seed: int) -> tuple[np.ndarray, str]:
    """Row indices to attribute with IG: the target's positive rows (labels), else the rows
    the run calls most strongly; at most ``max_rows`` (a seeded sample of the positives)."""
    if y is not None and y.sum() > 0:
        pos = np.flatnonzero(y > 0.5)
        if len(pos) > max_rows:
            pos = np.sort(np.random.default_rng(seed).choice(pos, max_rows, replace=False))
        return pos, f"{len(pos)} rows labelled positive"
    pred = run.predict(ds, t)
    top = np.sort(np.argsort(-pred, kind="stable")[:max_rows])
    return top, f"{len(top)} rows with the highest predicted probability"


def _eval_rows(y_t: np.ndarray, negatives: int | None, seed: int) -> np.ndarray:
    """The labelled rows permutation and deletion are scored on: every positive and a seeded
    sample of ``negatives`` negative rows (None: all rows). Each evaluated row costs one
    prediction per permuted column, and a rare target's loss is carried by its positives."""
    if negatives is None:
        return np.arange(len(y_t))
    pos, neg = np.flatnonzero(y_t > 0.5), np.flatnonzero(y_t <= 0.5)
    if len(neg) > negatives:
        neg = np.random.default_rng(seed + 1).choice(neg, negatives, replace=False)
    return np.sort(np.concatenate([pos, neg]))


def explain(run: LoadedRun, target: str, ds: Dataset, y: np.ndarray | None = None,
            reference: Dataset | None = None, method: str = "ig", top: int = 50, max_rows: int = 64,
            n_steps: int = 32, n_repeats: int = 2, negatives: int | None = 200, seed: int = 0,
            deletion: bool = True, gene_info=None, rows_note: str = "") -> dict:
    """Attributions of every raw column of ``ds`` for ``target`` (a JSON-ready dict, ranked).

    ``y``: the rows' labels (of the target, or of all the run's targets), needed by
    ``permutation`` and used by the deletion curve, both scored on the positives and
    ``negatives`` sampled negative rows (None: all). ``reference``: the rows whose controls
    (else mean) give the baseline (default ``ds``). Control rows are left out."""
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    t = resolve_target(run, target)
    if y is not None:
        y = np.asarray(y, np.float64)
        if y.shape[0] != len(ds) or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != len(run.scored)):
            raise ExplainError(f"labels of shape {y.shape}: expected {len(ds)} rows of the target's 0/1 labels "
                               f"or of all {len(run.scored)} targets")
    treated = ~ds.is_control
    ds = ds.subset(treated)
    y_t = None if y is None else (y if y.ndim == 1 else y[:, t])[treated]
    if len(ds) == 0:
        raise ExplainError("no treated rows to explain (all rows are controls)")
    scored_rows = _eval_rows(y_t, negatives, seed) if y_t is not None else None
    eval_ds = ds.subset(scored_rows) if scored_rows is not None else None
    eval_y = y_t[scored_rows] if scored_rows is not None else None
    base, base_values, base_what = _baseline(reference if reference is not None else ds)
    result: dict = {"target": target, "method": method, "run": str(run.run_dir),
                    "models": [m.name for m in run.models], "n_members": len(run.members),
                    "baseline": base_what, "held_out": rows_note}
    if method == "ig":
        rows, why = _explained_rows(run, ds, y_t, t, max_rows, seed)
        out = integrated_gradients(run, ds.subset(rows), t, base, n_steps=n_steps)
        scores, member_scores = out["rows"].mean(axis=0), out["members"].mean(axis=1)
        result.update(rows_explained=why, n_steps=n_steps, held_constant=out["held_constant"],
                      mean_abs=out["rows"].__abs__().mean(axis=0),
                      completeness={"mean_abs_error": float(out["completeness_error"].mean()),
                                    "mean_abs_gap": float(np.abs(out["gap"]).mean())})
    else:
        if y_t is None:
            raise ExplainError("permutation importance needs held-out labelled rows: a --data folder with "
                               "answers/test_targets_scored, or --features FILE with --labels FILE")
        out = permutation_importance(run, eval_ds, eval_y, t, n_repeats=n_repeats, seed=seed)
        scores, member_scores = out["scores"], out["member_scores"]
        result.update(rows_explained=f"{len(eval_ds)} labelled rows ({int(eval_y.sum())} positive)",
                      n_repeats=n_repeats, base_log_loss=out["base_loss"], rows_predicted=out["rows_predicted"])
    result["seconds"] = round(out["seconds"], 3)
    result["stability"] = stability(member_scores, run.members)
    order = np.argsort(-scores, kind="stable")
    if deletion:
        if eval_ds is not None:
            result["deletion"] = deletion_curve(run, eval_ds, eval_y, t, order, base_values, seed=seed)
        else:  # no labels: how the call on the explained rows weakens
            result["deletion"] = deletion_curve(run, ds.subset(rows), None, t, order, base_values, seed=seed)
        result["deletion"]["rows"] = len(eval_ds) if eval_ds is not None else len(rows)
    info = column_info(ds, gene_info)
    ranked = []
    for r, j in enumerate(order[:top]):
        row = {"rank": r + 1, **info[j], "score": float(scores[j])}
        if "mean_abs" in result:
            row["mean_abs"] = float(result["mean_abs"][j])
        ranked.append(row)
    result.pop("mean_abs", None)
    result.update(n_columns=len(info), top=ranked,
                  scores={info[j]["column"]: float(scores[j]) for j in range(len(info))})
    return result


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
    import re

    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", target)
    return layout.explain_dir(run_dir) / f"{safe}.{method}.json"


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
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
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
