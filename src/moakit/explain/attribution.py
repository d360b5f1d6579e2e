"""The two attribution methods: permutation importance (any model) and Integrated Gradients
through the whole fitted run (networks)."""

from __future__ import annotations

import time

import numpy as np

from moakit.data.dataset import Dataset
from moakit.explain.loaded import ExplainError, LoadedRun, column_values, column_vocab, edit_losses, raw_columns


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
            edits.append({j: column_values(ds, j)[perm] for j in cols})
    losses = edit_losses(run, ds, y, t, edits)
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
        from moakit.stages import stage_blocks

        self.run, self.feats, self.nets, self.consts = run, {}, {}, {}
        for m, model in enumerate(run.models):
            outputs = {}
            for i in range(len(model.chain.stages)):
                for seed in model.chain.seeds:
                    state = model.features[(i, seed)]
                    self.feats[(m, i, seed)] = tf = _TorchFeatures(state)
                    self.nets[(m, i, seed)] = _networks(model.estimators[(i, seed)])
                    blocks = stage_blocks(ds, model.chain.meta(i, seed, outputs))
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

    from moakit.stages import stage_blocks

    t0 = time.perf_counter()
    diff = _Differentiable(run, ds)
    flat, index = diff.constant_tensors()
    blocks = stage_blocks(ds, None)
    x = tuple(torch.as_tensor(blocks[b]) for b in ("g", "c", "cp"))
    b = tuple(torch.as_tensor(np.broadcast_to(baseline[name], blocks[name].shape).copy()) for name in ("g", "c", "cp"))
    codes = torch.as_tensor(blocks["cp_codes"])
    n_times = len(column_vocab(ds, "cp_time"))
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
