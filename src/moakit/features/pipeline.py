"""A feature Pipeline: ordered steps over blocks, declared in config, fitted and persisted.

Example (the Simple NN, YAML)::

    features:
      fit_on: train+test
      steps:
        - {kind: quantile, inputs: [g, c]}
        - {kind: factor_analysis, name: fa_g, inputs: [g], output: fa_g, n_components: 90}
        - {kind: row_stats, name: stats, inputs: [g, c], output: stats}
      output: [cp, g, c, fa_g, stats]

Steps run in order, so a step sees the blocks as the steps before it left them (above,
factor analysis runs on the quantile-transformed genes). ``output`` lists the blocks
concatenated, in that order, into the final float32 matrix.

``fit_on: train+test`` is the winners' transductive choice: the unsupervised steps are
fitted on the row-concatenation of the train and test blocks the caller passes.

Control rows: the runner passes every row with a ``ctl`` block (1.0 on control rows).
By default the steps are fitted on the treated rows only; ``fit_controls: true`` fits them
on the control rows too, as the winners' scripts did (they dropped the controls only after
the feature engineering). ``transform`` ignores ``ctl``.

A step may override the pipeline's ``fit_on`` and ``fit_controls`` for itself, and fix its
own ``random_state`` (else the run seed): the winners' scripts fitted, e.g., a quantile
transform on the train rows and a factor analysis on train + test in one pipeline, each
with its own fixed random state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from moakit.artifacts import PickleFormatError, atomic_dir, read_json, refuse_pickle
from moakit.features import safe_state
from moakit.features.steps import Blocks, Step, as_block, step_class
from moakit.runs import layout

CONTROL_BLOCK = "ctl"  # (n, 1) float, 1.0 on control rows; read only when fitting
MANIFEST = layout.FEATURES_MANIFEST
STATES = layout.FEATURES_STATES  # the steps' fitted states: a JSON tree ...
ARRAYS = layout.FEATURES_ARRAYS  # ... and its arrays
FORMAT_VERSION = 2
LEGACY_STATE = "steps.joblib"  # format 1 (a pickle): refused, unsupported format
LEGACY_FORMAT_VERSION = 1


class StepConfig(BaseModel):
    """One step: ``kind``, ``name``, ``inputs``, optional ``output``, optional overrides of
    the pipeline's ``fit_on`` / ``fit_controls`` and a fixed ``random_state``, plus the
    kind's params as extra keys (validated against the kind's parameter model)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None
    inputs: list[str] = Field(..., min_length=1)
    output: str | None = None
    fit_on: Literal["train", "train+test"] | None = None  # None: the pipeline's
    fit_controls: bool | None = None  # None: the pipeline's
    random_state: int | None = None  # None: the run seed
    # skip the step on data where it cannot run (an input block with no columns, more
    # components than columns or rows; moakit.features.panel); not written when false
    optional: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if isinstance(out, dict) and not self.optional:
            out.pop("optional", None)
        return out

    @model_validator(mode="after")
    def _check(self) -> "StepConfig":
        if self.name is None:
            self.name = self.output or f"{self.kind}_{'_'.join(self.inputs)}"
        where = f"feature step {self.name!r}"
        try:
            cls = step_class(self.kind)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"{where}: inputs {self.inputs} repeat a block")
        if self.output is None and not cls.in_place_ok:
            raise ValueError(f"{where}: kind {self.kind!r} writes a new block, so it needs an `output` name")
        if self.output is not None and self.output in self.inputs:
            raise ValueError(f"{where}: output {self.output!r} is also an input; "
                             "omit `output` to transform the inputs in place")
        try:
            cls.Params(**self.params)
        except ValidationError as e:
            from moakit.config import format_errors

            problems = format_errors(e)
            known = sorted(cls.Params.model_fields)
            raise ValueError(f"{where} ({self.kind}): bad parameters: {problems} (known parameters: {known})") from None
        for key in cls.saved_defaults:  # written out, so a saved config says what its fit used
            if key not in self.model_extra:
                self.model_extra[key] = cls.Params.model_fields[key].default
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def takes_run_seed(self) -> bool:
        """Whether the run seed can change this step's result: it fixes no ``random_state``
        and its kind draws from one with these parameters (:meth:`Step.draws_random`)."""
        return self.random_state is None and step_class(self.kind).draws_random(self.params)

    def build(self, seed: int) -> Step:
        seed = self.random_state if self.random_state is not None else seed
        return step_class(self.kind)(self.name, self.inputs, self.output, seed=seed, **self.params)


def steps_of_kind(tree: Any, kind: str) -> Iterator[dict[str, Any]]:
    """Every feature step of ``kind`` in a dumped config tree (``config.model_dump()``, a
    model's ``params``, a pipeline's dict; nested dicts and lists at any depth), depth first in
    the tree's order: each dict whose ``kind`` is ``kind``, itself, so a caller may change the
    steps in place (e.g. every umap step's ``transform``) before validating the tree again."""
    if isinstance(tree, dict):
        if tree.get("kind") == kind:
            yield tree
        for value in tree.values():
            yield from steps_of_kind(value, kind)
    elif isinstance(tree, list):
        for value in tree:
            yield from steps_of_kind(value, kind)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fit_on: Literal["train", "train+test"] = "train"
    fit_controls: bool = False  # fit on control rows too (when the caller marks them with `ctl`)
    steps: list[StepConfig] = Field(default_factory=list)
    output: list[str] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        names = [s.name for s in self.steps]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feature step names must be unique; repeated: {dup} (give the steps a `name`)")
        if len(set(self.output)) != len(self.output):
            raise ValueError(f"features output {self.output} lists a block twice")
        return self


class Pipeline:
    """Ordered feature steps; ``transform`` gives the float32 matrix of ``config.output``.

    Fitted attributes: ``feature_names_`` (one per output column), ``input_widths_``
    (column count of every caller-given block the pipeline reads), ``n_fit_rows_``,
    ``fit_seconds_`` (per step).
    """

    def __init__(self, config: PipelineConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        self.steps: list[Step] = [s.build(self.seed) for s in config.steps]

    @classmethod
    def from_config(cls, config: PipelineConfig | dict, seed: int = 0) -> "Pipeline":
        if not isinstance(config, PipelineConfig):
            config = PipelineConfig.model_validate(config)
        return cls(config, seed)

    # ------------------------------------------------------------------ block flow

    def external_inputs(self) -> list[str]:
        """Blocks the caller must supply, in first-read order: read by a step or output, but
        written by no earlier step (what ``fit`` / ``transform`` take from their blocks)."""
        written: set[str] = set()
        needed: list[str] = []
        for step in self.steps:
            for b in step.inputs:
                if b not in written and b not in needed:
                    needed.append(b)
            written.update(step.writes)
        for b in self.config.output:
            if b not in written and b not in needed:
                needed.append(b)
        return needed

    def take_inputs(self, blocks: Blocks, what: str) -> tuple[Blocks, int]:
        """(the :meth:`external_inputs` of ``blocks`` as float32 blocks, their row count);
        a KeyError naming the missing blocks, a ValueError when row counts differ (``what``
        names the blocks in both)."""
        needed = self.external_inputs()
        missing = [b for b in needed if b not in blocks]
        if missing:
            raise KeyError(f"feature pipeline: {what} lacks block(s) {missing} (it has {sorted(blocks)}); "
                           f"the pipeline reads {needed}")
        taken = {b: as_block(blocks[b], b) for b in needed}
        rows = {b: a.shape[0] for b, a in taken.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"feature pipeline: {what} blocks have different row counts {rows}")
        return taken, (next(iter(rows.values())) if rows else 0)

    def _check_widths(self, blocks: Blocks, what: str) -> None:
        for b, width in self.input_widths_.items():
            if blocks[b].shape[1] != width:
                raise ValueError(f"feature pipeline: block {b!r} of {what} has {blocks[b].shape[1]} columns, "
                                 f"it had {width} when the pipeline was fitted")

    # ------------------------------------------------------------------ fit / transform

    @staticmethod
    def _split_controls(blocks: Blocks | None) -> tuple[Blocks | None, np.ndarray | None]:
        """(blocks without ``ctl``, boolean control mask or None when unmarked)."""
        if blocks is None:
            return None, None
        ctl = blocks.get(CONTROL_BLOCK)
        rest = {b: a for b, a in blocks.items() if b != CONTROL_BLOCK}
        if ctl is None:
            return rest, None
        ctl = np.asarray(ctl)
        return rest, (ctl if ctl.ndim == 1 else ctl[:, 0]) != 0  # also for 0 rows (no test split)

    def _step_fit_on(self, cfg: StepConfig) -> str:
        return cfg.fit_on or self.config.fit_on

    def _step_rows(self, cfg: StepConfig, blocks: Blocks, controls: np.ndarray | None) -> Blocks:
        """The step's input blocks on the rows it is fitted on."""
        fit_controls = self.config.fit_controls if cfg.fit_controls is None else cfg.fit_controls
        if controls is None or fit_controls:
            return {b: blocks[b] for b in cfg.inputs}
        return {b: blocks[b][~controls] for b in cfg.inputs}

    def fit_panel(self, blocks: Blocks) -> None:
        """Fit the steps to the widths of the caller's blocks (:func:`moakit.features.panel.plan_pipeline`):
        empty blocks are dropped from inputs and output, optional steps that cannot run are
        skipped (``skipped_steps_``); nothing changes on lish-moa's blocks."""
        from moakit.features.panel import plan_pipeline

        widths = {b: int(as_block(a, b).shape[1]) for b, a in blocks.items()}
        n_rows = int(next(iter(blocks.values())).shape[0]) if blocks else None
        config, self.skipped_steps_ = plan_pipeline(self.config, widths, n_rows)
        if config is not self.config:
            self.config = config
            self.steps = [s.build(self.seed) for s in config.steps]

    def fit(self, train_blocks: Blocks, test_blocks: Blocks | None = None) -> "Pipeline":
        train_blocks, train_ctl = self._split_controls(train_blocks)
        test_blocks, test_ctl = self._split_controls(test_blocks)
        self.fit_panel({b: a for b, a in train_blocks.items() if b in self.external_inputs()})
        blocks, _ = self.take_inputs(train_blocks, "the training blocks")
        self.input_widths_ = {b: int(a.shape[1]) for b, a in blocks.items()}
        with_test = [self._step_fit_on(c) == "train+test" for c in self.config.steps]
        test = None
        if any(with_test) or (not self.steps and self.config.fit_on == "train+test"):
            if test_blocks is None:
                raise ValueError("feature pipeline: fit_on is 'train+test' but no test blocks were given")
            test, n_test_rows = self.take_inputs(test_blocks, "the test blocks")
            self._check_widths(test, "the test blocks")
            if n_test_rows == 0:  # no test split (e.g. moakit.MoAModel.fit without X_test)
                test, with_test = None, [False] * len(with_test)

        names = {b: [f"{b}-{i}" for i in range(w)] for b, w in self.input_widths_.items()}
        self.fit_seconds_: dict[str, float] = {}
        self.step_fit_rows_: dict[str, int] = {}
        for i, (cfg, step) in enumerate(zip(self.config.steps, self.steps)):
            t0 = time.perf_counter()
            fit_blocks = self._step_rows(cfg, blocks, train_ctl)
            if with_test[i]:
                more = self._step_rows(cfg, test, test_ctl)
                fit_blocks = {b: np.concatenate([fit_blocks[b], more[b]], axis=0) for b in fit_blocks}
            n_rows = int(next(iter(fit_blocks.values())).shape[0])
            if n_rows == 0:
                raise ValueError(f"feature pipeline: step {step.name!r} has no rows to fit on")
            step.fit(fit_blocks)
            self.step_fit_rows_[step.name] = n_rows
            # Transform the rows only if a later step reads what this one wrote (the test
            # rows only if such a step is fitted on them too); otherwise the widths (for
            # names) come from the fitted state alone.
            readers = [j for j in range(i + 1, len(self.steps)) if set(step.writes) & set(self.steps[j].inputs)]
            if readers:
                blocks = step.transform(blocks)
                if test is not None and any(with_test[j] for j in range(i + 1, len(self.steps))):
                    test = step.transform(test)
            self.fit_seconds_[step.name] = round(time.perf_counter() - t0, 3)
            names.update(step.names_out(names))
        # rows of the pipeline's own setting (a step may override it: step_fit_rows_)
        n_train = len(next(iter(blocks.values()))) if blocks else 0
        if train_ctl is not None and not self.config.fit_controls:
            n_train = int((~train_ctl).sum())
        n_test = 0
        if self.config.fit_on == "train+test" and test is not None:
            n_test = int((~test_ctl).sum()) if test_ctl is not None and not self.config.fit_controls \
                else len(next(iter(test.values())))
        self.n_fit_rows_ = n_train + n_test
        if self.n_fit_rows_ == 0:
            raise ValueError("feature pipeline: no rows to fit on")

        self.block_names_ = {b: names[b] for b in self.config.output}
        self.feature_names_ = [n for b in self.config.output for n in names[b]]
        return self

    def transform(self, blocks: Blocks) -> np.ndarray:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("feature pipeline is not fitted")
        blocks, n = self.take_inputs(blocks, "the blocks to transform")
        self._check_widths(blocks, "the blocks to transform")
        if n == 0:
            return np.zeros((0, len(self.feature_names_)), np.float32)
        for step in self.steps:
            blocks = step.transform(blocks)
        X = np.concatenate([blocks[b] for b in self.config.output], axis=1).astype(np.float32, copy=False)
        if X.shape[1] != len(self.feature_names_):  # a step's width differs from its names: a bug
            raise RuntimeError(f"feature pipeline gave {X.shape[1]} columns, {len(self.feature_names_)} expected")
        return np.ascontiguousarray(X)

    def fit_transform(self, train_blocks: Blocks, test_blocks: Blocks | None = None) -> np.ndarray:
        return self.fit(train_blocks, test_blocks).transform(train_blocks)

    @property
    def n_features_out_(self) -> int:
        return len(self.feature_names_)

    @property
    def reads_row_count(self) -> bool:
        """Whether one of its steps reads the row count (:attr:`moakit.models.base.FeatureState.reads_row_count`)."""
        return any(step.reads_row_count for step in self.steps)

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.kind}:{s.name}" for s in self.steps)
        return f"Pipeline(fit_on={self.config.fit_on!r}, steps=[{steps}], output={self.config.output})"

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write ``path/`` atomically (a temp dir, then a rename): ``manifest.json``, the
        steps' fitted states as JSON (``steps.json``) and their arrays (``steps.npz``);
        data only, never a pickle (see :mod:`moakit.features.safe_state`)."""
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("feature pipeline is not fitted: nothing to save")
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        states = []
        for i, s in enumerate(self.steps):
            where = f"feature step {s.name!r} ({s.kind})"
            states.append({"name": s.name, "kind": s.kind, "n_features_in": s.n_features_in_,
                           "state": safe_state.encode(s.state_, s.trusted_state(), arrays, f"s{i}_", where)})
        with atomic_dir(path) as tmp:
            manifest = {
                "format_version": FORMAT_VERSION,
                "seed": self.seed,
                "config": self.config.model_dump(mode="json"),
                "input_widths": self.input_widths_,
                "n_fit_rows": self.n_fit_rows_,
                "step_fit_rows": self.step_fit_rows_,
                "fit_seconds": self.fit_seconds_,
                "feature_names": self.feature_names_,
                "block_names": self.block_names_,
            }
            if getattr(self, "skipped_steps_", None):  # only on panels where optional steps cannot run
                manifest["skipped_steps"] = self.skipped_steps_
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            (tmp / STATES).write_text(json.dumps(states))
            safe_state.write_arrays(tmp / ARRAYS, arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        """Reload a saved pipeline. Nothing in ``path`` is executed: an old pickled save
        (format 1, ``steps.joblib``) is refused (unsupported format, retrain)."""
        path = Path(path)
        manifest = _read_json(path / MANIFEST)
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version == LEGACY_FORMAT_VERSION:
            refuse_pickle(path / LEGACY_STATE)
        if version != FORMAT_VERSION:
            raise safe_state.StateError(f"{path / MANIFEST}: feature pipeline format {version!r}, "
                                        f"this moakit reads {FORMAT_VERSION}")
        try:
            pipe = cls.from_config(_with_saved_defaults(manifest["config"]), seed=manifest["seed"])
            arrays = safe_state.read_arrays(path / ARRAYS)
            states = _read_json(path / STATES)
            if not isinstance(states, list) or not all(isinstance(s, dict) for s in states):
                raise safe_state.StateError(f"{path / STATES}: not a list of step states")
            if [(s.get("name"), s.get("kind")) for s in states] != [(s.name, s.kind) for s in pipe.steps]:
                raise safe_state.StateError(f"{path}: saved step states do not match the manifest's steps")
            for step, saved in zip(pipe.steps, states):
                step.state_ = safe_state.decode(saved["state"], step.trusted_state(), arrays,
                                                f"{path / STATES}: step {step.name!r}")
                step.n_features_in_ = {str(b): int(w) for b, w in saved["n_features_in"].items()}
            pipe.input_widths_ = {b: int(w) for b, w in manifest["input_widths"].items()}
            pipe.n_fit_rows_ = manifest["n_fit_rows"]
            pipe.step_fit_rows_ = manifest.get("step_fit_rows", {})
            pipe.fit_seconds_ = manifest["fit_seconds"]
            pipe.feature_names_ = list(manifest["feature_names"])
            pipe.block_names_ = manifest["block_names"]
            pipe.skipped_steps_ = list(manifest.get("skipped_steps", []))
        except (safe_state.StateError, PickleFormatError):
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise safe_state.StateError(f"{path}: damaged feature pipeline ({type(exc).__name__}: {exc})") from None
        return pipe


def _with_saved_defaults(config: dict) -> dict:
    """A saved pipeline config with each step's missing ``saved_defaults`` parameters (added
    after it was saved) set to the value its fit used (:attr:`Step.saved_defaults`)."""
    steps = []
    for step in config["steps"]:
        missing = {k: v for k, v in step_class(step["kind"]).saved_defaults.items() if k not in step}
        steps.append({**step, **missing})
    return {**config, "steps": steps}


def _read_json(path: Path):
    try:
        return read_json(path)
    except FileNotFoundError:
        raise safe_state.StateError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise safe_state.StateError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def blocks_from_dataset(ds) -> Blocks:
    """The base blocks of a :class:`moakit.data.dataset.Dataset`: g, c, cp (one-hot of
    cp_time and cp_dose) and cp_codes (cp_type, cp_dose, cp_time as numbers: Dataset.cp_codes)."""
    return {"g": as_block(ds.genes, "g"), "c": as_block(ds.cells, "c"), "cp": ds.cp_onehot(),
            "cp_codes": ds.cp_codes()}
