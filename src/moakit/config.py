"""One config system: a YAML file per model whose top level is the write-up's `full`
profile, with smaller profiles (`cpu`, `smoke`, ...) as overlays that change sizes and
counts, never methods.

    model: simple_nn
    cv: {scheme: old, n_folds: 5, seed: 42}
    seeds: [0, 1, 2, 3, 4, 5]
    params: {...}            # validated by the model's own Params class
    profiles:
      cpu: {seeds: [0], params: {train: {epochs: 10}}}

Overlays merge dictionaries key by key; lists and scalars replace.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moakit.choices import DEFAULT_CV_SCHEME, DEFAULT_SELECTION_POLICY, CVScheme, SelectionPolicy


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


class CVConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheme: CVScheme = DEFAULT_CV_SCHEME
    n_folds: int = Field(5, ge=2)
    seed: int = 42
    max_replicates: int = Field(18, ge=1)  # drug CV: drugs with more rows are split row-wise


class SelectionConfig(BaseModel):
    """Which rows judge a fold's epochs (best epoch, early stopping, keep-if-better).

    ``holdout``: a ``holdout_fraction`` of the fold's TRAINING rows, split off with the
    run's CV scheme (whole drugs under the drug-aware CV); the fold's own rows then decide
    nothing, so its out-of-fold predictions are honest. ``last``: nothing is judged; the
    schedule runs to its end and the last epoch is kept. ``oof``: the fold's own rows judge
    (what the winners' scripts did); its OOF scores are optimistic and flagged as such.
    ``holdout_refit``: the schedule is chosen as under ``holdout``, then the network is
    trained again on ALL the fold's training rows replaying it (the fold's rows still
    decide nothing).

    ``holdout_fraction`` is realised as whole parts of a stratified (drug-aware) split of
    the training rows (:func:`moakit.cv.holdout_parts`, :func:`moakit.cv.holdout_mask`):
    exact for every multiple of 0.05 and every 1/k (0.1 -> 1 of 10 parts, 0.15 -> 3 of 20,
    0.3 -> 3 of 10); any other fraction is rounded to the nearest with at most 20 parts
    (0.123 -> 1 of 8), which metrics.json's ``selection.holdout_parts`` then records.
    """

    model_config = ConfigDict(extra="forbid")

    policy: SelectionPolicy = DEFAULT_SELECTION_POLICY
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5)


class RunConfig(BaseModel):
    """A model config resolved for one profile."""

    model_config = ConfigDict(extra="forbid")

    model: str
    description: str = ""
    profile: str = "full"
    cv: CVConfig = CVConfig()
    selection: SelectionConfig = SelectionConfig()
    seeds: list[int] = Field([0], min_length=1)
    params: dict[str, Any] = {}
    source: str = ""

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} lists a seed twice")
        return value


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def packaged_configs() -> dict[str, Path]:
    """Configs shipped with moakit, by name (file stem)."""
    folder = resources.files("moakit").joinpath("configs")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = packaged_configs()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise ConfigError(f"{name_or_path}: no such config file, and no shipped config of that name "
                      f"(shipped: {', '.join(sorted(shipped))})")


def read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(
    name_or_path: str | Path,
    profile: str = "full",
    seeds: int | list[int] | None = None,
    folds: int | None = None,
    cv: str | None = None,
    selection: str | None = None,
) -> RunConfig:
    """Read a model config, apply a profile overlay and command-line overrides.

    ``seeds`` as an int keeps the first N seeds of the profile (or 0..N-1 if it has fewer).
    """
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if profile != "full":
        if profile not in profiles:
            raise ConfigError(f"{path}: no profile {profile!r} (available: full, {', '.join(profiles)})")
        raw = deep_merge(raw, profiles[profile])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"{path}: seeds: {seeds} seeds asked for; at least 1 is needed")
        current = list(raw.get("seeds", [0]))
        raw["seeds"] = current[:seeds] if seeds <= len(current) else list(range(seeds))
    elif seeds is not None:
        raw["seeds"] = list(seeds)
    raw.setdefault("cv", {})
    if folds is not None:
        raw["cv"]["n_folds"] = folds
    if cv is not None:
        raw["cv"]["scheme"] = cv
    if selection is not None:
        raw["selection"] = {**(raw.get("selection") or {}), "policy": selection}
    try:
        return RunConfig(**raw, profile=profile, source=str(path))
    except ValidationError as exc:
        raise ConfigError(f"{path} (profile {profile}): {format_errors(exc)}") from exc


def format_errors(exc: ValidationError, limit: int | None = None) -> str:
    """A pydantic validation error as one line, ``field.sub: message; ...`` (the first
    ``limit`` problems): the one formatter of every config, record and manifest error."""
    errors = exc.errors() if limit is None else exc.errors()[:limit]
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}" for err in errors)



def validate_params(params_cls: type[BaseModel], params: dict, where: str) -> BaseModel:
    """Validate a model's params with its Params class, with an error naming the config."""
    try:
        return params_cls(**params)
    except ValidationError as exc:
        raise ConfigError(f"{where}: params: {format_errors(exc)}") from exc
