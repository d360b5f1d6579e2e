"""Content identity of a stage-seed's fitted features, and reuse of an equal fit in a run.

A stage-seed's feature fit is determined by: the model and stage, the feature pipelines
it fits (their steps' kinds and parameters) with each step's random state as resolved for
the seed (its own ``random_state``, else the seed) where the step's kind draws from one
(``Step.random_draws``: a row statistic, a variance threshold or a
scaler draws nothing, so the seed is not in its part of the key), the data (the runner's
fingerprint of the train and test rows, which also fixes the rows fitted on), and the
upstream stage outputs its ``meta`` block is made of. :func:`stage_key` digests these; two
stage-seeds with equal keys fit equal states. When every step fixes its random state or
draws none (the 3-stage NN's FA / UMAP / quantile steps, as the winners' script; the Simple
NN's, whose row statistics take no seed), the seed is not in the key and all seeds of a
stage share one fit: the first seed fits and saves it, the others' features folder is made
of hard links to its files (a copy where links are not possible) and ``features_key.json``
records where it came from.

Keys of runs written before the seed was left out of seedless steps differ from today's
for pipelines with such a step and no random state of its own (the Simple NNs' row
statistics); a resumed run then fits the missing stage-seeds once more under the new key
(an older seed's saved features are reused as they are, never compared), and results are
the same (the seed changed nothing in those steps). Keys with no such step are unchanged.

Models whose features are feature pipelines and nothing else take part (the MLPs, the
stacked models, the 1D-CNN, the 2-heads ResNet: its scaler and PCAs, exact with the config's
``pca_solver``, so its seeds share one fit); a model with other feature code takes part when
it declares what its fit depends on (:meth:`moakit.models.base.Model.feature_fit_spec`: the
DeepInsight CNNs' t-SNE map, whose random state is the seed); any other model's key holds
its seed (no reuse).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from moakit.artifacts import atomic_dir, read_json
from moakit.runs import layout

_FINGERPRINTS: dict[int, tuple[object, str]] = {}


def stage_pipelines(model, stage) -> list | None:
    """The PipelineConfigs a stage's fit_features fits, or None when it fits anything else."""
    from moakit.features import PipelineConfig
    from moakit.models.cnn1d import Cnn1dModel
    from moakit.models.label_powerset import LabelPowersetNN
    from moakit.models.resnet_2heads import pipeline_config, ResNet2HeadsModel
    from moakit.models.simple_nn import SimpleNN
    from moakit.models.stacked import StackedModel

    if isinstance(model, StackedModel):
        params = model.stage_params(stage)
        configs = [getattr(params, "features", None)]
        base = getattr(params, "base_features", None)
        if base is not None:
            configs.append(getattr(model.stage_params(type(stage)(base)), "features", None))
    elif isinstance(model, (SimpleNN, LabelPowersetNN, Cnn1dModel)):
        configs = [getattr(model.params, "features", None)]
    elif isinstance(model, ResNet2HeadsModel):
        # fit_features marks the cell PCA optional on a gene-only panel: a fact of the data,
        # which the key holds (its fingerprint), so the full panel's config stands for both
        configs = [pipeline_config(model.params)]
    else:
        return None
    return configs if all(isinstance(c, PipelineConfig) for c in configs) else None


def _fingerprint(data) -> str:
    from moakit.data.identity import data_fingerprint

    cached = _FINGERPRINTS.get(id(data))
    if cached is None or cached[0] is not data:
        _FINGERPRINTS.clear()  # one data object at a time: no growth, no stale id reuse
        cached = _FINGERPRINTS[id(data)] = (data, data_fingerprint(data))
    return cached[1]


def pipeline_identity(config, seed: int) -> dict:
    """A PipelineConfig as JSON, each step's random state as resolved for ``seed`` where the
    step draws from one (``StepConfig.takes_run_seed``), the rest seedless: what of a
    pipeline's fit its config decides. Stage keys and fold transforms'
    (:mod:`moakit.fold_transforms`) keys are built from it."""
    dumped = config.model_dump(mode="json")
    for step, entry in zip(config.steps, dumped["steps"]):
        if step.takes_run_seed:
            entry["random_state"] = seed  # as StepConfig.build resolves it
    return dumped


def fit_spec(model, stage, seed: int) -> object | None:
    """What stage ``stage``'s feature fit for ``seed`` depends on besides its input rows, as
    JSON: its pipelines (:func:`pipeline_identity`), or the model's declared
    :meth:`~moakit.models.base.Model.feature_fit_spec`; None: not known, never shared."""
    configs = stage_pipelines(model, stage)
    if configs is not None:
        return [pipeline_identity(c, seed) for c in configs]
    spec = model.feature_fit_spec(stage, seed)
    return None if spec is None else {"spec": spec}


def shares(model, stage) -> bool:
    """Whether the stage's feature fits have a content key (reused in a run, cached across runs)."""
    return fit_spec(model, stage, 0) is not None


def stage_key(model, chain, index: int, seed: int, data) -> str:
    """The content key of stage ``index``'s feature fit for ``seed`` (hex digest)."""
    stage = chain.stages[index]
    what = fit_spec(model, stage, seed)
    if what is None:
        what = {"seed": seed}  # unknown feature code: never shared between seeds
    payload = {"model": model.name, "stage": [stage.name, stage.targets, stage.keep_controls],
               "pipelines": what, "data": _fingerprint(data),
               "upstream": [list(k) for k in chain.upstream(index, seed)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def find_fitted(run_dir: str | Path, chain, index: int, seed: int, key: str) -> Path | None:
    """An already-fitted features folder of the same stage (another seed) with key ``key``."""
    stage = chain.stages[index]
    for other in chain.seeds:
        if other == seed:
            continue
        sdir = layout.stage_dir(run_dir, stage.name, other)
        record = sdir / layout.FEATURES_KEY
        if (sdir / layout.FEATURES_DIR).is_dir() and record.is_file():
            try:
                saved = read_json(record)
            except (OSError, ValueError):
                continue
            if isinstance(saved, dict) and saved.get("key") == key:
                return sdir / layout.FEATURES_DIR
    return None


def record_key(stage_dir: str | Path, key: str, linked: Path | None = None, *, source: str | None = None,
               cache_key: str | None = None, cache: str | None = None) -> None:
    """Write ``features_key.json`` (:class:`moakit.runs.records.FeaturesKey`): ``from`` is
    the linked folder of another seed (relative to the stage-seed folder); ``source`` fit,
    link or cache (from the feature cache, :mod:`moakit.feature_cache`)."""
    from moakit.runs.records import write_features_key

    from_ = None if linked is None else os.path.relpath(linked, Path(stage_dir))
    write_features_key(stage_dir, key, source or ("link" if linked is not None else "fit"), from_, cache_key, cache)


def link_features(source: Path, target: Path) -> None:
    """``target`` as a folder of hard links to ``source``'s files (copies where a link is
    not possible). The run's files are only ever replaced by rename, never rewritten in
    place, so a linked file never changes under the other stage-seed."""
    with atomic_dir(target) as tmp:
        for f in sorted(p for p in source.rglob("*") if p.is_file()):
            dest = tmp / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copy2(f, dest)


def enabled() -> bool:
    """Reuse is on unless the environment sets MOAKIT_FEATURE_REUSE=0 (to measure or
    compare a run that fits every stage-seed)."""
    return os.environ.get("MOAKIT_FEATURE_REUSE", "1") != "0"


def reusable(run_dir: str | Path, model, chain, index: int, seed: int, data) -> tuple[Path, str] | None:
    """(an equal, already-fitted features folder of this run, the key), or None."""
    if not enabled():
        return None
    key = stage_key(model, chain, index, seed, data)
    source = find_fitted(run_dir, chain, index, seed, key)
    return None if source is None else (source, key)
