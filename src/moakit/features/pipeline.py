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
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moakit.artifacts import atomic_dir
from moakit.features.steps import Blocks, Step, as_block, step_class

MANIFEST = "manifest.json"
STATE = "steps.joblib"
FORMAT_VERSION = 1


class StepConfig(BaseModel):
    """One step: ``kind``, ``name``, ``inputs``, optional ``output``, plus the kind's params
    as extra keys (validated against the kind's parameter model)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None
    inputs: list[str] = Field(..., min_length=1)
    output: str | None = None

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
            problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '?'}: {err['msg']}" for err in e.errors())
            known = sorted(cls.Params.model_fields)
            raise ValueError(f"{where} ({self.kind}): bad parameters: {problems} (known parameters: {known})") from None
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self, seed: int) -> Step:
        return step_class(self.kind)(self.name, self.inputs, self.output, seed=seed, **self.params)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fit_on: Literal["train", "train+test"] = "train"
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

    def _external_inputs(self) -> list[str]:
        """Blocks the caller must supply: read by a step or output, but written by no earlier step."""
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

    def _take_inputs(self, blocks: Blocks, what: str) -> tuple[Blocks, int]:
        needed = self._external_inputs()
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

    def fit(self, train_blocks: Blocks, test_blocks: Blocks | None = None) -> "Pipeline":
        blocks, _ = self._take_inputs(train_blocks, "the training blocks")
        self.input_widths_ = {b: int(a.shape[1]) for b, a in blocks.items()}
        if self.config.fit_on == "train+test":
            if test_blocks is None:
                raise ValueError("feature pipeline: fit_on is 'train+test' but no test blocks were given")
            test, _ = self._take_inputs(test_blocks, "the test blocks")
            self._check_widths(test, "the test blocks")
            blocks = {b: np.concatenate([blocks[b], test[b]], axis=0) for b in blocks}
        self.n_fit_rows_ = int(next(iter(blocks.values())).shape[0]) if blocks else 0
        if self.n_fit_rows_ == 0:
            raise ValueError("feature pipeline: no rows to fit on")

        names = {b: [f"{b}-{i}" for i in range(w)] for b, w in self.input_widths_.items()}
        self.fit_seconds_: dict[str, float] = {}
        for i, step in enumerate(self.steps):
            t0 = time.perf_counter()
            step.fit(blocks)
            # Transform the fit rows only if a later step reads what this one wrote;
            # otherwise the widths (for names) come from the fitted state alone.
            if any(b in later.inputs for later in self.steps[i + 1:] for b in step.writes):
                blocks = step.transform(blocks)
            self.fit_seconds_[step.name] = round(time.perf_counter() - t0, 3)
            names.update(step.names_out(names))

        self.block_names_ = {b: names[b] for b in self.config.output}
        self.feature_names_ = [n for b in self.config.output for n in names[b]]
        return self

    def transform(self, blocks: Blocks) -> np.ndarray:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("feature pipeline is not fitted")
        blocks, n = self._take_inputs(blocks, "the blocks to transform")
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

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.kind}:{s.name}" for s in self.steps)
        return f"Pipeline(fit_on={self.config.fit_on!r}, steps=[{steps}], output={self.config.output})"

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write ``path/`` (manifest.json + steps.joblib) atomically: a temp dir, then a rename."""
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("feature pipeline is not fitted: nothing to save")
        path = Path(path)
        with atomic_dir(path) as tmp:
            manifest = {
                "format_version": FORMAT_VERSION,
                "seed": self.seed,
                "config": self.config.model_dump(mode="json"),
                "input_widths": self.input_widths_,
                "n_fit_rows": self.n_fit_rows_,
                "fit_seconds": self.fit_seconds_,
                "feature_names": self.feature_names_,
                "block_names": self.block_names_,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            joblib.dump([{"name": s.name, "kind": s.kind, "state": s.state_, "n_features_in": s.n_features_in_}
                         for s in self.steps], tmp / STATE)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        path = Path(path)
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: feature pipeline format {manifest.get('format_version')!r}, "
                             f"this moakit reads {FORMAT_VERSION}")
        pipe = cls.from_config(manifest["config"], seed=manifest["seed"])
        states = joblib.load(path / STATE)
        if [(s["name"], s["kind"]) for s in states] != [(s.name, s.kind) for s in pipe.steps]:
            raise ValueError(f"{path}: saved step states do not match the manifest's steps")
        for step, saved in zip(pipe.steps, states):
            step.state_ = saved["state"]
            step.n_features_in_ = saved["n_features_in"]
        pipe.input_widths_ = {b: int(w) for b, w in manifest["input_widths"].items()}
        pipe.n_fit_rows_ = manifest["n_fit_rows"]
        pipe.fit_seconds_ = manifest["fit_seconds"]
        pipe.feature_names_ = list(manifest["feature_names"])
        pipe.block_names_ = manifest["block_names"]
        return pipe


def blocks_from_dataset(ds) -> Blocks:
    """The base blocks of a :class:`moakit.data.dataset.Dataset`: g, c, cp (one-hot of
    cp_time and cp_dose) and cp_codes (cp_type, cp_dose, cp_time as numbers: Dataset.cp_codes)."""
    return {"g": as_block(ds.genes, "g"), "c": as_block(ds.cells, "c"), "cp": ds.cp_onehot(),
            "cp_codes": ds.cp_codes()}
