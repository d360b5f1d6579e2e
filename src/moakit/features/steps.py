"""Feature steps: small, named, fitted transforms over *blocks*.

A block set is a ``dict[str, np.ndarray]`` of named float32 2-D arrays sharing one row
count (``g`` genes, ``c`` cells, ``cp`` one-hot cp_time/cp_dose, ``meta`` previous-stage
predictions, plus whatever earlier steps wrote).

Every step reads its ``inputs`` (block names) and either

* writes one NEW block ``output`` computed from the column-wise concatenation of its
  inputs, or
* (``output`` is None) transforms each input block IN PLACE, with one fitted state per
  block (e.g. a per-column quantile transform of ``g`` and of ``c``).

Steps are sklearn-like: :meth:`Step.fit` learns state kept in attributes ending with
``_``, :meth:`Step.transform` returns a new dict and never writes into the caller's arrays.
Each kind declares its parameters as a pydantic model (``Params``), so a config's typo or
wrong type fails when the config is read, naming the step.

This module is the machinery (:class:`Step`, the registry); the kinds are in
:mod:`moakit.features.step_kinds`, imported (and re-exported) at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from moakit.registry import Registry

if TYPE_CHECKING:
    from moakit.features.safe_state import Trusted

Blocks = dict[str, np.ndarray]

STEP_KINDS: Registry[type["Step"]] = Registry("feature step kind")


def register(cls: type["Step"]) -> type["Step"]:
    """Class decorator: make ``cls`` available under ``cls.kind`` in configs."""
    return STEP_KINDS.add(cls.kind, cls)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def as_block(array: Any, name: str) -> np.ndarray:
    """``array`` as a 2-D float32 array (no copy when it already is one)."""
    out = np.asarray(array, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"block {name!r} must be 2-D, got shape {out.shape}")
    return out


def finite(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


class Step:
    """Base class of the feature steps; subclasses implement ``_fit`` / ``_apply``.

    ``_fit(parts)`` gets the list of input arrays (one per input block, or the single
    block being transformed in place) and returns the fitted state (None when the step
    learns nothing); ``_apply(state, parts)`` returns the transformed float32 array.
    """

    kind: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    in_place_ok: ClassVar[bool] = True  # may run without an output block
    # Whether fitting or applying a step of this kind draws from its random state (its
    # ``random_state``, else the run seed), i.e. whether its result can change with the
    # seed: True, False, or (a kind whose use depends on its parameters) a function of the
    # validated ``Params`` giving that, e.g. ``staticmethod(lambda p: p.subsample is not
    # None)``. Every kind declares it; None (not declared) counts as True. Read it through
    # :meth:`draws_random`.
    random_draws: ClassVar[bool | Callable[[Any], bool] | None] = None
    # Parameters added after steps of this kind were saved, with the value a saved step
    # config that lacks one was fitted with (e.g. umap's ``transform``: "umap"). A step
    # config always writes these parameters (StepConfig), and a saved pipeline reads a
    # missing one as this value (Pipeline.load), so old run folders keep their behaviour.
    saved_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, inputs: list[str], output: str | None = None, seed: int = 0,
                 **params: Any) -> None:
        if not inputs:
            raise ValueError(f"step {name!r}: inputs must name at least one block")
        if output is None and not self.in_place_ok:
            raise ValueError(f"step {name!r} ({self.kind}) writes a new block: give it an `output` name")
        self.name = name
        self.inputs = list(inputs)
        self.output = output
        self.seed = int(seed)
        self.params = self.Params(**params)

    @classmethod
    def draws_random(cls, params: Mapping[str, Any]) -> bool:
        """Whether a step of this kind with the config's kind parameters ``params`` may draw
        from its random state (so its fit or output may differ between seeds): the kind's
        declared ``random_draws``, evaluated on ``params`` where it is a function; True
        where the kind declares nothing."""
        rule = cls.random_draws
        if rule is None or isinstance(rule, bool):
            return rule is not False
        return bool(rule(cls.Params(**params)))

    # ------------------------------------------------------------------ public API

    @property
    def in_place(self) -> bool:
        return self.output is None

    @property
    def writes(self) -> list[str]:
        """The block names this step writes."""
        return list(self.inputs) if self.in_place else [self.output]  # type: ignore[list-item]

    @property
    def reads_row_count(self) -> bool:
        """This step's part of a feature state's ``reads_row_count``
        (:attr:`moakit.models.base.FeatureState.reads_row_count`); only umap overrides it."""
        return False

    def fit(self, blocks: Blocks) -> "Step":
        parts = self._gather(blocks, check_widths=False)
        self.n_features_in_ = {b: int(p.shape[1]) for b, p in zip(self.inputs, parts)}
        if self.in_place:
            self.state_ = {b: self._fit([p]) for b, p in zip(self.inputs, parts)}
        else:
            self.state_ = {self.output: self._fit(parts)}
        return self

    def transform(self, blocks: Blocks) -> Blocks:
        self._check_fitted()
        parts = self._gather(blocks, check_widths=True)
        out = dict(blocks)
        if self.in_place:
            for b, p in zip(self.inputs, parts):
                out[b] = self._as_output(self._apply(self.state_[b], [p]))
        else:
            out[self.output] = self._as_output(self._apply(self.state_[self.output], parts))
        return out

    def names_out(self, names: dict[str, list[str]]) -> dict[str, list[str]]:
        """Column names of the blocks this step writes, given the names of its inputs."""
        self._check_fitted()
        if self.in_place:
            result = {}
            for b in self.inputs:
                width = self._width(self.state_[b], [names[b]])
                if width == len(names[b]):
                    result[b] = list(names[b])
                else:
                    result[b] = [f"{b}_{self.name}-{i}" for i in range(width)]
            return result
        return {self.output: self._names(self.state_[self.output], [names[b] for b in self.inputs])}

    def get_params(self) -> dict[str, Any]:
        return self.params.model_dump()

    def trusted_state(self) -> "Trusted":
        """What the fitted state may hold besides arrays and plain data (dicts, lists,
        numbers, strings): the trusted list of its saved form, which is arrays + JSON,
        never a pickle (see :mod:`moakit.features.safe_state`). A step whose state is made of
        arrays and plain data needs nothing here; one holding a fitted object lists its class."""
        from moakit.features.safe_state import Trusted

        return Trusted()

    def __repr__(self) -> str:
        where = "in place" if self.in_place else f"-> {self.output}"
        return f"{type(self).__name__}({self.name!r}, {self.inputs} {where}, {self.get_params()})"

    # ------------------------------------------------------------------ hooks

    def _fit(self, parts: list[np.ndarray]) -> Any:
        return None

    def _apply(self, state: Any, parts: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _width(self, state: Any, part_names: list[list[str]]) -> int:
        """Number of columns ``_apply`` writes."""
        raise NotImplementedError

    def _names(self, state: Any, part_names: list[list[str]]) -> list[str]:
        return [f"{self.output}-{i}" for i in range(self._width(state, part_names))]

    # ------------------------------------------------------------------ helpers

    def _gather(self, blocks: Blocks, check_widths: bool) -> list[np.ndarray]:
        missing = [b for b in self.inputs if b not in blocks]
        if missing:
            raise KeyError(f"step {self.name!r} ({self.kind}) needs block(s) {missing}; "
                           f"available: {sorted(blocks)}")
        parts = [as_block(blocks[b], b) for b in self.inputs]
        rows = {p.shape[0] for p in parts}
        if len(rows) > 1:
            raise ValueError(f"step {self.name!r}: input blocks {self.inputs} have different row counts "
                             f"{[p.shape[0] for p in parts]}")
        if check_widths:
            for b, p in zip(self.inputs, parts):
                if p.shape[1] != self.n_features_in_[b]:
                    raise ValueError(f"step {self.name!r} ({self.kind}): block {b!r} has {p.shape[1]} columns, "
                                     f"it had {self.n_features_in_[b]} when the step was fitted")
        return parts

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise RuntimeError(f"step {self.name!r} ({self.kind}) is not fitted")

    @staticmethod
    def _as_output(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    @staticmethod
    def _concat(parts: list[np.ndarray]) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class SklearnStep(Step):
    """A step wrapping one sklearn-style transformer fitted on the concatenated inputs."""

    def _make(self) -> Any:
        raise NotImplementedError

    def trusted_state(self):
        from moakit.features.safe_state import Trusted

        return Trusted(types=(type(self._make()),))

    def _fit(self, parts: list[np.ndarray]) -> Any:
        return self._make().fit(self._concat(parts))

    def _apply(self, state: Any, parts: list[np.ndarray]) -> np.ndarray:
        return state.transform(self._concat(parts))

    def _width(self, state: Any, part_names: list[list[str]]) -> int:
        return int(len(state.get_feature_names_out()))


def step_class(kind: str) -> type[Step]:
    return STEP_KINDS.get(kind)


# Every kind, registered on import (after Step is defined: step_kinds imports it).
from moakit.features.step_kinds import (  # noqa: E402,F401  (the kinds register themselves; re-exported)
    CpCategoriesStep, FactorAnalysisStep, keep_torch_threads, KMeansOneHotStep, PCAStep, QuantileStep,
    row_quantile_norm, row_statistics, ROW_STATS, RowMeanStep, RowQuantileNormStep, RowStatsStep,
    StandardScalerStep, UMAPStep, VarianceThresholdStep,
)
