"""Content identity and reuse of the transforms fitted INSIDE a fold's estimator (issue 29).

The 1D-CNN fits a quantile + PCA pipeline on each fold's training rows and saves it with
the fold's estimator (``fold_k/estimator/features``). With its fixed random states and the
folds shared by the seeds, every seed fits the same state for a fold: at the `full` profile
16 seeds x 5 folds = 80 fits and, at prediction, 80 transforms of every row, of which 5 are
distinct. Stage features are shared by :mod:`moakit.feature_reuse` (fit) and
:class:`moakit.streaming.RunPredictor` (prediction); this module extends the same two keys
to fold transforms:

* fit: :func:`fit_key` is the pipeline's steps' kinds and parameters, each random state as
  resolved for the seed where the step draws one (:func:`moakit.feature_reuse.pipeline_identity`,
  the stage keys' own), the input layout and the fit matrix's content
  (:func:`matrix_fingerprint`, which fixes the fit rows). :func:`fit_pipeline` reuses a fit
  with an equal key made earlier in the same run (a fold job of another seed), as a copy
  that carries this fit's seed, so what is saved is what fitting again would save (the
  fit's timings aside). The fits are kept in a :class:`FitCache` that the executor makes
  for each run (:func:`reusing_fits`; a Ray worker keeps one for the run it works for,
  :func:`worker_cache`) and drops when the run ends: two runs never share fits, and outside
  a run nothing is kept. Once saved, :func:`share_saved` makes its files that equal another
  seed's saved transform of the same fold hard links to them (stored once; works across
  processes, as it compares what is on disk). Off with ``MOAKIT_FEATURE_REUSE=0``, as stage
  reuse.
* prediction: :func:`transform_identity` is the saved transform's content digest
  (:func:`moakit.streaming.folder_digest`, as for stage features: equal bytes, the seed in
  the manifest counted as resolved) plus the estimator's input layout. RunPredictor applies
  each (input, identity) once per set of rows it predicts at once (a chunk, or a block of
  one) and gives its matrix to every fold and seed with that identity; old run folders are
  read as they are (the digest needs nothing new).

An estimator takes part by following :class:`FoldTransformEstimator`, which one check,
:func:`takes_part`, asks of its class (a loaded estimator's, or the kind a saved folder names).
Only the 1D-CNN does:
the other models' fold estimators fit no transform (the DeepInsight CNNs render images from
the stage's feature map inside each network's batches; sharing them would hold a chunk's
images, e.g. 20,480 x 3 x 224 x 224 floats at `full`, so they are rendered per network).
"""

from __future__ import annotations

import copy
import filecmp
import hashlib
import json
import contextlib
import contextvars
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Protocol

import numpy as np

if TYPE_CHECKING:
    from moakit.streaming import FileDigests

# fitted fold pipelines kept for reuse in a run (a pipeline's state is small: the 1D-CNN's
# quantiles and PCA axes, ~1 MB at full size); least recently used dropped first
KEEP_FITS = 16


class FitCache:
    """Fitted fold pipelines by :func:`fit_key`, the ``keep`` most recently used (thread-safe)."""

    def __init__(self, keep: int = KEEP_FITS) -> None:
        self.keep = int(keep)
        self._fits: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._fits)

    def get(self, key: str):
        with self._lock:
            fitted = self._fits.get(key)
            if fitted is not None:
                self._fits.move_to_end(key)
            return fitted

    def put(self, key: str, fitted: object) -> None:
        with self._lock:
            self._fits[key] = fitted
            while len(self._fits) > self.keep:
                self._fits.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._fits.clear()


# the cache of the run being executed in this context (None: no run, nothing reused)
_ACTIVE: contextvars.ContextVar[FitCache | None] = contextvars.ContextVar("moakit_fold_fits", default=None)
_WORKER: tuple[str, FitCache] | None = None  # a Ray worker's cache and the run it is for
_WORKER_LOCK = threading.Lock()


@contextlib.contextmanager
def reusing_fits(cache: FitCache | None = None) -> Iterator[FitCache]:
    """While active, :func:`fit_pipeline` reuses equal fits kept in ``cache`` (a new one by
    default, cleared at the end: the executors wrap a run in this)."""
    own = cache is None
    cache = FitCache() if own else cache
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        if own:
            cache.clear()


def worker_cache(run_id: str) -> FitCache:
    """This process's cache for the run ``run_id`` (a Ray worker running its fold jobs one
    after another): kept while the worker works for that run, dropped for a new one."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or _WORKER[0] != run_id:
            _WORKER = (run_id, FitCache())
        return _WORKER[1]


class FoldTransformEstimator(Protocol):
    """A fold estimator whose predictions are a fitted transform of the stage matrix, then a
    network: ``predict_proba(X) == predict_transformed(transform(X))``. Whether a class
    follows it: :func:`takes_part`."""

    transform_folder: ClassVar[str]  # the transform's folder inside the saved estimator folder

    @property
    def reads_row_count(self) -> bool: ...  # its transform's (moakit.models.base.FeatureState.reads_row_count)

    @classmethod
    def transform_reads_row_count(cls, folder: Path) -> bool: ...  # the same, from the saved transform alone

    def transform_signature(self) -> object: ...  # JSON: what else decides the transform (input layout)

    def transform(self, X: np.ndarray) -> np.ndarray: ...

    def predict_transformed(self, Xt: np.ndarray) -> np.ndarray: ...


# the protocol's members a class must have, read from the protocol itself (its methods and
# properties; ``transform_folder``, an annotation alone, is checked apart)
FOLD_TRANSFORM_MEMBERS = tuple(name for name in vars(FoldTransformEstimator) if not name.startswith("_"))


def takes_part(cls: type) -> bool:
    """Whether estimators of class ``cls`` follow :class:`FoldTransformEstimator`: the one check
    behind :func:`has_transform` (a saved folder's kind), :func:`transform_identity` and
    :func:`share_saved` (a loaded estimator's class)."""
    return (isinstance(getattr(cls, "transform_folder", None), str)
            and all(hasattr(cls, name) for name in FOLD_TRANSFORM_MEMBERS))


def matrix_fingerprint(X: np.ndarray) -> str:
    """Content identity of a matrix: dtype, shape and bytes."""
    X = np.ascontiguousarray(X)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{X.dtype.str}{X.shape}".encode())
    h.update(memoryview(X).cast("B"))
    return h.hexdigest()


def fit_key(config, seed: int, signature: object, X: np.ndarray) -> str:
    """The content key of fitting the PipelineConfig ``config`` with ``seed`` on ``X``
    (whose columns ``signature`` lays out in blocks): equal keys, equal fits."""
    from moakit.feature_reuse import pipeline_identity

    payload = {"pipeline": pipeline_identity(config, seed), "signature": signature, "fit": matrix_fingerprint(X)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def fit_pipeline(config, seed: int, signature: object, X: np.ndarray, blocks: Callable[[np.ndarray], dict]):
    """``Pipeline.from_config(config, seed).fit(blocks(X))``, or an equal fit made earlier in
    this run (:func:`reusing_fits`; a copy with this ``seed``: the fitted steps are shared,
    never changed)."""
    from moakit import feature_reuse
    from moakit.features import Pipeline

    cache = _ACTIVE.get()
    if cache is None or not feature_reuse.enabled():
        return Pipeline.from_config(config, seed=seed).fit(blocks(X))
    key = fit_key(config, seed, signature, X)
    fitted = cache.get(key)
    if fitted is None:
        fitted = Pipeline.from_config(config, seed=seed).fit(blocks(X))
        cache.put(key, fitted)
    pipe = copy.copy(fitted)
    pipe.seed = int(seed)  # the manifest's seed, as this fit would write it
    return pipe


def transform_identity(est, est_dir: str | Path, digests: FileDigests | None = None) -> str | None:
    """Content identity of a loaded fold estimator's transform, from its saved folder
    ``est_dir``; None when the estimator has none to share (or MOAKIT_FEATURE_REUSE=0: each
    estimator transforms for itself, as before this sharing). ``digests``: the caller's
    :class:`moakit.streaming.FileDigests` (the seeds' hard-linked files read once)."""
    from moakit import feature_reuse

    if not takes_part(type(est)) or not feature_reuse.enabled():
        return None
    folder = Path(est_dir) / est.transform_folder
    if not folder.is_dir():
        return None
    from moakit.streaming import folder_digest

    signature = json.dumps(est.transform_signature(), sort_keys=True)
    return hashlib.sha256(f"{folder_digest(folder, digests)}\0{signature}".encode()).hexdigest()


def saved_class(est_dir: str | Path) -> type:
    """The class of the estimator saved in ``est_dir`` (the kind its spec.json names), unloaded."""
    from moakit.models.estimators import ESTIMATORS, estimator_kind

    return ESTIMATORS.get(estimator_kind(est_dir))


def has_transform(est_dir: str | Path) -> bool:
    """Whether the estimator saved in ``est_dir`` is of a kind that fits a transform of its
    own (:func:`takes_part`), from its spec.json, without loading it."""
    return takes_part(saved_class(est_dir))


def saved_reads_row_count(est_dir: str | Path) -> bool:
    """Whether the transform of the estimator saved in ``est_dir`` reads the row count
    (:attr:`FoldTransformEstimator.reads_row_count`), from the saved transform alone (its
    network is not loaded); False for a kind without a transform of its own."""
    cls = saved_class(est_dir)
    return takes_part(cls) and bool(cls.transform_reads_row_count(Path(est_dir) / cls.transform_folder))


class SharedTransforms:
    """Fold transforms applied once per input: ``predict(est, identity, X, x_key)`` gives
    ``est.predict_proba(X)``, transforming ``X`` (known by ``x_key``) only for an
    (``x_key``, ``identity``) not seen before. ``applied`` counts the transforms run."""

    def __init__(self) -> None:
        self.matrices: dict[tuple, np.ndarray] = {}
        self.applied = 0

    def predict(self, est, identity: str | None, X: np.ndarray, x_key: object) -> np.ndarray:
        if identity is None:
            return est.predict_proba(X)
        key = (x_key, identity)
        if key not in self.matrices:
            self.matrices[key] = est.transform(X)
            self.applied += 1
        return est.predict_transformed(self.matrices[key])


def share_saved(est, stage_dir: str | Path, fold: int) -> int:
    """After a fold estimator is saved: each file of its transform's folder whose bytes equal
    the same file of an equal transform already saved for this fold by another seed of the
    stage becomes a hard link to that file, so the state is stored once (the manifest, which
    names each fit's seed, stays each seed's own). Nothing changes for a reader: the folder
    holds the same bytes (a copy stays where links are not possible). Returns the files linked."""
    from moakit import feature_reuse
    from moakit.runs import layout
    from moakit.streaming import folder_digest

    if not takes_part(type(est)) or not feature_reuse.enabled():
        return 0
    mine = layout.estimator_dir(stage_dir, fold) / est.transform_folder
    if not mine.is_dir():
        return 0
    digest = None
    try:
        for other_seed in layout.sibling_seed_dirs(stage_dir):
            other = layout.estimator_dir(other_seed, fold) / est.transform_folder
            if other.is_dir():
                digest = digest or folder_digest(mine)
                if folder_digest(other) == digest:
                    return _link_equal_files(mine, other)
    except OSError:  # another seed's folder went away meanwhile (a resume redoing it): keep the copy
        pass
    return 0


def _link_equal_files(folder: Path, source: Path) -> int:
    linked = 0
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        src = source / f.relative_to(folder)
        if not src.is_file() or os.path.samefile(src, f) or not filecmp.cmp(src, f, shallow=False):
            continue
        tmp = f.with_name(f".{f.name}.{os.getpid()}.link")
        try:
            os.link(src, tmp)
        except OSError:
            return linked  # no hard links here: the copies stay
        os.replace(tmp, f)
        linked += 1
    return linked
