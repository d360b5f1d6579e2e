"""Prediction in chunks of rows, with each saved transform applied once per input.

:class:`RunPredictor` loads a model run's saved feature states once (one per distinct
content: the stage-seeds of a run whose feature folders hold the same bytes share one
object) and replays the stage chain on a chunk of rows exactly as
:func:`moakit.stages.predict_run` does on all of them. Within a chunk, a transform whose
saved state (its folder's content digest) and inputs (the same upstream stage outputs)
equal an earlier stage-seed's is not applied again: its matrix is reused. The 3-stage NN
with fixed random states (every seed's features the same) transforms once per stage
instead of once per seed. The same holds one level down, for a transform fitted inside a
fold's estimator (the 1D-CNN's quantile + PCA: :mod:`moakit.fold_transforms`): applied
once per chunk for every fold and seed whose saved transform has the same content.

Bounded memory: per chunk only the chunk's blocks, feature matrices and network
activations exist; ``moakit predict`` also reads its input and writes its output chunk by
chunk (:mod:`moakit.runs.predict`, :mod:`moakit.inference`), so what grows with the input is
its ids and meta columns. Every transform and network runs on blocks of a fixed number of
rows (:func:`row_blocks`: ``BLOCK_ROWS``, or the inference batch size when one is given),
in one pass as in chunks, and
chunks are whole multiples of the block (``Predictor.aligned_chunk_rows``): a matrix product's rounding
depends on its row count (a small-matrix or edge kernel of the BLAS), so this is what makes
a row's bits independent of where chunks start and end. Every transform moakit ships is
row-independent at inference up to that rounding (scalers, quantile, PCA / FA, variance
threshold, row statistics, k-means one-hot, UMAP embedding each row on its own -- a umap
step's default ``transform: rows``, :mod:`moakit.features.umap_rows` --, the networks in
eval mode). One exception remains, in umap steps with ``transform: umap`` (the 2-stage
NN + TabNet's config pins it, as its script; runs saved before the option read as it):
umap-learn's ``transform`` depends on the other rows of the call (the graph scaled by the call's largest edge weight, kernel widths floored by the call's
mean distance, and above 4,096 fit rows pynndescent's candidates drawn from a random stream
across the query rows), the same in one pass as in chunks since both give it the same
blocks; and it chooses its epochs from the number of rows it is given (100 up to 10,000
rows, else 30) when the step sets no ``n_epochs``: :func:`umap_rows_hint` makes every block
of such a step use the epochs of the whole input, so chunked output equals one pass bit for
bit. The hint is entered only for runs that have such a step (``RunPredictor.reads_row_count``,
from each feature state's ``reads_row_count``: :class:`moakit.models.base.FeatureState`).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from moakit.models.estimators import load_estimator
from moakit.runs import layout

DEFAULT_CHUNK_ROWS = 20_000
# rows of a prediction block (when no inference batch size is given): every transform and
# network forward at prediction runs on blocks of this many rows (row_blocks)
BLOCK_ROWS = 4096
# estimators of a run are kept loaded across chunks up to this many bytes of saved weights;
# above it each chunk reloads them one at a time (as predict_run does)
KEEP_ESTIMATORS_BYTES = 512 * 2**20

# rows of the whole input being predicted, for transforms whose result depends on the
# number of rows they are given (umap-learn's transform epochs, umap steps with
# ``transform: umap``); None outside chunked prediction
_TOTAL_ROWS: contextvars.ContextVar[int | None] = contextvars.ContextVar("moakit_total_rows", default=None)


@contextlib.contextmanager
def umap_rows_hint(n_rows: int) -> Iterator[None]:
    """While active, a UMAP step with ``transform: umap`` (runs saved before the row-by-row
    transform) transforms any chunk with the epochs umap would choose for ``n_rows`` rows
    (:func:`umap_transform_epochs`); ``transform: rows`` needs no hint."""
    token = _TOTAL_ROWS.set(int(n_rows))
    try:
        yield
    finally:
        _TOTAL_ROWS.reset(token)


def umap_transform_epochs(state) -> int | None:
    """The ``n_epochs`` to give a fitted umap.UMAP for the transform of a chunk so that it
    runs the epochs of the whole input (umap-learn 0.5: ``n_epochs // 3`` when set, else
    100 up to 10,000 rows, else 30); None: nothing to pin (no hint, or n_epochs is set)."""
    total = _TOTAL_ROWS.get()
    if total is None or getattr(state, "n_epochs", 0) is not None:
        return None
    return 3 * (100 if total <= 10_000 else 30)


class FileDigests:
    """Saved files' sha256 digests, each remembered by its inode (device, inode, size and
    modification time), so that the hard links of a state stored once
    (:mod:`moakit.feature_reuse`, :func:`moakit.fold_transforms.share_saved`) are read once.
    A :class:`RunPredictor` keeps one; digests are compared within a process, never stored."""

    def __init__(self) -> None:
        self._by_inode: dict[tuple[int, int, int, int], bytes] = {}

    def file(self, f: Path) -> bytes:
        st = f.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._by_inode:
            with open(f, "rb") as fh:
                self._by_inode[key] = hashlib.file_digest(fh, "sha256").digest()
        return self._by_inode[key]

    def folder(self, path: Path) -> str:
        """:func:`folder_digest` of ``path``, its files read through this memo."""
        return folder_digest(path, self)


def folder_digest(path: Path, digests: FileDigests | None = None) -> str:
    """Content identity of a saved feature folder: its files' relative paths and bytes,
    except that a feature pipeline's manifest counts without its fit timings and with each
    step's random state as resolved (its own, else the pipeline's seed where the step draws
    one, else none) instead of the seed: two seeds' fits with fixed random states, or of
    steps that draw nothing, are the same state. ``digests``: a :class:`FileDigests` the
    caller keeps (files already read are not read again); a new one by default."""
    digests = FileDigests() if digests is None else digests
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(b"\0")
        if f.name == layout.FEATURES_MANIFEST:
            h.update(hashlib.sha256(_manifest_identity(f.read_bytes())).digest())
        else:
            h.update(digests.file(f))
    return h.hexdigest()


def _manifest_identity(raw: bytes) -> bytes:
    try:
        manifest = json.loads(raw)
        seed = manifest.pop("seed")
        manifest.pop("fit_seconds", None)
        manifest["resolved_random_states"] = [_resolved_random_state(s, seed) for s in manifest["config"]["steps"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw  # not a pipeline manifest: its bytes
    return json.dumps(manifest, sort_keys=True).encode()


def _resolved_random_state(step: dict, seed: int) -> int | None:
    """A saved step config's random state as its fit used it: its own, else the pipeline's
    seed where its kind draws from one (``StepConfig.takes_run_seed``), else None (a row
    statistic or a scaler: the seed changed nothing)."""
    from moakit.features import StepConfig

    if step.get("random_state") is not None:
        return step["random_state"]
    return seed if StepConfig.model_validate(step).takes_run_seed else None


def row_blocks(n_rows: int, block_rows: int) -> Iterator[np.ndarray]:
    """The row indices of each block of ``block_rows`` rows from row 0; the last block
    holds the rows that are left. A matrix product's rounding may depend on how many rows it
    is given (OpenBLAS's small-matrix kernels, an edge tile, a matrix-vector kernel for one
    row): chunks of whole blocks cut an input into the blocks of one pass, so each row is
    computed in a block of the same rows either way. The last block is not padded: padding
    gains nothing for that (one pass and chunks end on the same last block) and would give an
    input of fewer rows than a block other bits than the run's own test predictions."""
    for start in range(0, n_rows, block_rows):
        yield np.arange(start, min(start + block_rows, n_rows))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class RunPredictor:
    """A model run's saved artifacts, loaded once, predicting chunk after chunk.

    ``predict(ds)`` equals ``stages.predict_run(run_dir, ds)`` bit for bit; ``n_transforms``
    counts the feature transforms applied (fewer than stage-seeds when some are shared)."""

    def __init__(self, run_dir: str | Path, batch_size: int | None = None) -> None:
        from moakit.artifacts import read_json
        from moakit.config import RunConfig
        from moakit.models.checks import build_model
        from moakit.stages import StageChain, stage_dir

        self.run_dir = Path(run_dir)
        self.batch_size = batch_size
        self.block_rows = int(batch_size) if batch_size else BLOCK_ROWS
        config = RunConfig(**read_json(self.run_dir / layout.CONFIG))
        self.model = build_model(config)
        self.chain = StageChain(self.model, config.seeds)
        self.n_folds = config.cv.n_folds
        states: dict[str, object] = {}  # digest -> loaded feature state
        self.digests = FileDigests()  # each saved file's digest, by inode: hard links read once
        self.parts: list[tuple[int, int, object, tuple, Path]] = []
        total = 0
        for index, stage in enumerate(self.chain.stages):
            for seed in config.seeds:
                sdir = stage_dir(self.run_dir, stage, seed)
                fdir = sdir / layout.FEATURES_DIR
                digest = self.digests.folder(fdir)
                if digest not in states:
                    states[digest] = self.model.load_features(stage, fdir)
                key = (index, digest, tuple(self.chain.upstream(index, seed)))
                self.parts.append((index, seed, states[digest], key, sdir))
                total += sum(_size(layout.estimator_dir(sdir, k)) for k in range(self.n_folds))
        self.n_feature_states = len(states)
        # True: a stage's features read the row count; None: the fold estimators decide (on first use)
        self._reads_row_count: bool | None = True if any(s.reads_row_count for s in states.values()) else None
        self._estimators: dict[tuple[int, int], list] | None = {} if total <= KEEP_ESTIMATORS_BYTES else None
        self._fold_ids: dict[tuple[int, int, int], str | None] = {}  # fold transforms' content identities
        self.n_transforms = 0
        self.n_fold_transforms = 0  # transforms fitted inside fold estimators applied (moakit.fold_transforms)

    def _load_estimators(self, index: int, seed: int, sdir: Path) -> list:
        if self._estimators is not None and (index, seed) in self._estimators:
            return self._estimators[(index, seed)]
        from moakit.fold_transforms import transform_identity

        ests = []
        for k in range(self.n_folds):
            est = load_estimator(layout.estimator_dir(sdir, k))
            if self.batch_size is not None and hasattr(est, "eval_batch_size"):
                est.eval_batch_size = int(self.batch_size)
            if (index, seed, k) not in self._fold_ids:
                self._fold_ids[(index, seed, k)] = transform_identity(est, layout.estimator_dir(sdir, k), self.digests)
            ests.append(est)
        if self._estimators is not None:
            self._estimators[(index, seed)] = ests
        return ests

    @property
    def reads_row_count(self) -> bool:
        """Whether a transform of the run (a stage's features, a fold estimator's own) depends
        on the number of rows it is given, so that chunks need :func:`umap_rows_hint`. Fold
        estimators are looked at on first use (the answer kept), only those of a kind with a
        transform: loaded when the run's estimators are kept (the ones every chunk then uses),
        else their saved transforms alone (each chunk loads the estimators anyway)."""
        if self._reads_row_count is None:
            self._reads_row_count = any(self._fold_reads_row_count(index, seed, sdir)
                                        for index, seed, _, _, sdir in self.parts)
        return self._reads_row_count

    def _fold_reads_row_count(self, index: int, seed: int, sdir: Path) -> bool:
        from moakit.fold_transforms import has_transform, saved_reads_row_count

        if not has_transform(layout.estimator_dir(sdir, 0)):
            return False
        if self._estimators is not None:
            return any(est.reads_row_count for est in self._load_estimators(index, seed, sdir))
        return any(saved_reads_row_count(layout.estimator_dir(sdir, k)) for k in range(self.n_folds))

    def batch_sizes(self) -> set[int]:
        """The inference batch sizes of the run's estimators (those that say theirs)."""
        sizes = set()
        for index, seed, _, _, sdir in self.parts:
            for est in self._load_estimators(index, seed, sdir):
                size = getattr(est, "eval_batch_size", None)
                for inner in ("network", "regressor"):  # label powerset's network, TabNet's regressor
                    size = size or getattr(getattr(est, inner, None), "eval_batch_size" if inner == "network"
                                           else "batch_size", None)
                if isinstance(size, (int, np.integer)) and size > 0:
                    sizes.add(int(size))
        return sizes

    def predict(self, ds) -> np.ndarray:
        """Scored-target probabilities for the rows of ``ds`` (controls 0), as predict_run:
        block after block of ``block_rows`` rows (:func:`row_blocks`), so that a row's values
        do not depend on where a chunk of ``ds`` starts or ends, when chunks are whole blocks.
        umap-learn's transform epochs (umap steps saved with ``transform: umap``) are those
        of ``ds`` unless a hint for a whole input is active."""
        if len(ds) == 0:
            return self.predict_block(ds)
        needed = self.reads_row_count and _TOTAL_ROWS.get() is None
        hint = umap_rows_hint(len(ds)) if needed else contextlib.nullcontext()
        with hint:
            return np.concatenate([self.predict_block(ds.subset(rows))
                                   for rows in row_blocks(len(ds), self.block_rows)])

    def predict_block(self, ds) -> np.ndarray:
        """The stage chain on the rows of ``ds`` at once (each shared transform applied once).
        A fold estimator's own transform with a content identity already applied to the
        same stage matrix is not applied again (:class:`moakit.fold_transforms.SharedTransforms`)."""
        from moakit import metrics
        from moakit.fold_transforms import SharedTransforms
        from moakit.stages import stage_blocks

        outputs: dict[tuple[int, int], np.ndarray] = {}
        applied: dict[tuple, np.ndarray] = {}
        shared = SharedTransforms()
        for index, seed, features, key, sdir in self.parts:
            if key not in applied:
                applied[key] = features.transform(stage_blocks(ds, self.chain.meta(index, seed, outputs)))
                self.n_transforms += 1
            X = applied[key]
            preds = [shared.predict(est, self._fold_ids.get((index, seed, k)), X, key)
                     for k, est in enumerate(self._load_estimators(index, seed, sdir))]
            outputs[(index, seed)] = np.mean(preds, axis=0).astype(np.float32)
        self.n_fold_transforms += shared.applied
        return metrics.zero_controls(self.chain.final(outputs), ds.is_control)


def chunks(n_rows: int, chunk_rows: int | None) -> list[slice]:
    """Row slices of at most ``chunk_rows`` rows (one slice for None / 0); at least one."""
    from moakit.data.chunked import chunk_slices

    return chunk_slices(n_rows, chunk_rows)


class DatasetRows:
    """A Dataset in memory as a source of chunks (as :class:`moakit.data.chunked.TableChunks`
    is for a file): ``n_rows``, ``sig_id``, ``where`` (the name errors give it) and
    ``datasets(chunk_rows)`` yielding (first row, Dataset)."""

    def __init__(self, ds, where: str = "features") -> None:
        self.ds, self.where, self.n_rows, self.sig_id = ds, where, len(ds), ds.sig_id

    def datasets(self, chunk_rows: int | None) -> Iterator[tuple[int, object]]:
        for rows in chunks(self.n_rows, chunk_rows):
            yield rows.start, self.ds if rows.stop - rows.start == self.n_rows else self.ds.subset(rows)


@contextlib.contextmanager
def row_progress(total: int, show: bool, label: str = "predict") -> Iterator[Callable[[int], None]]:
    """A Rich bar on stderr over ``total`` rows with rows/s; yields ``advance(n_rows)``.
    Nothing is shown when ``show`` is false."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from moakit.progress import console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            t = bar.tasks[0]
            elapsed = t.elapsed or 0.0
            bar.update(task, rate=f"{t.completed / elapsed:,.0f} rows/s" if elapsed > 0 else "")

        yield advance
