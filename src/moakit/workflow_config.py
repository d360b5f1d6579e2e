"""The blend config of ``moakit run`` (:mod:`moakit.workflow`): its schema (model entries,
blend settings, skipped models, profiles), loading with the profile overlay, and resolving
and checking every entry's model config before any work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moakit import choices
from moakit.choices import DEFAULT_BLEND_METHODS, BlendMethod
from moakit.config import ConfigError, RunConfig, deep_merge, format_errors, load_config, read_yaml, resolve_config_path
from moakit.data.dataset import MoAData
from moakit.models.checks import check_config

_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class WorkflowError(ValueError):
    """A workflow that cannot run (or failed); the message names the model entry."""


class EntryConfigError(WorkflowError, ConfigError):
    """A model entry's config that cannot be used (with this data): a usage error, exit 2."""


# --------------------------------------------------------------------------- config


class ModelEntry(BaseModel):
    """One model of a blend: a model config, under a unique entry name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    config: str
    seeds: int | list[int] | None = None  # None: the model config's (profile's) seeds
    folds: int | None = Field(None, ge=2)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _ENTRY_NAME.match(value):
            raise ValueError(f"{value!r} is not a usable entry name (letters, digits, _ . -; it names a folder)")
        return value


class BlendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # per_target: one weight per model and target; kept only where it wins the nested score
    methods: list[BlendMethod] = list(DEFAULT_BLEND_METHODS)
    optuna_trials: int = Field(3000, ge=1)
    storage: str | None = None  # Optuna storage URL (e.g. sqlite:///blend.db) to resume a search
    preset: str | None = None  # a named weight set of blend.PRESETS instead of a search
    seed: int = 0
    # per-target calibration (moakit.calibration), kept only if it lowers the nested log loss
    calibrate: choices.CalibrationMethod | None = None
    # with a preset: "preset" uses its weights; "nested" keeps the preset or the best search,
    # whichever has the lower nested log loss (blend.json "choice" records both scores)
    choose: Literal["preset", "nested"] = "preset"
    # shown beside the weights (CLI table, report) and kept in blend.json, e.g. why a preset
    # does not fit this profile
    note: str = ""


class SkipModels(BaseModel):
    """Entries a profile leaves out of the blend, and why (printed when the run starts,
    shown in the report)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(..., min_length=1)
    reason: str = Field(..., min_length=1)


class BlendConfig(BaseModel):
    """A blend config resolved for one profile."""

    # protected_namespaces=(): pydantic < 2.10 would warn about the field model_profile_fallback
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    description: str = ""
    profile: str = "full"
    models: list[ModelEntry] = Field(..., min_length=1)
    blend: BlendSettings = BlendSettings()
    # requested profile -> profile to use for a model config that lacks the requested one
    model_profile_fallback: dict[str, str] = {}
    # entries this profile leaves out (removed from ``models``; kept here with the reason)
    skip_models: SkipModels | None = None
    source: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> "BlendConfig":
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ValueError(f"model entry name {entry.name!r} appears more than once")
            seen.add(entry.name)
        if self.skip_models is not None:  # idempotent: a resolved config's dump validates again
            self.models = [e for e in self.models if e.name not in self.skip_models.models]
            if not self.models:
                raise ValueError("skip_models leaves no model entry to train")
        return self


def _overlay(raw: dict, overlay: dict, path: Path, profile: str) -> dict:
    """Apply a profile overlay; its ``models`` may be a list (replaces) or a mapping
    ``entry name -> changes`` merged into those entries."""
    overlay = dict(overlay)
    models_overlay = overlay.pop("models", None)
    out = deep_merge(raw, overlay)
    if isinstance(models_overlay, list):
        out["models"] = models_overlay
    elif isinstance(models_overlay, dict):
        entries = [dict(e) if isinstance(e, dict) else e for e in out.get("models") or []]
        names = {e.get("name"): i for i, e in enumerate(entries) if isinstance(e, dict)}
        for name, changes in models_overlay.items():
            if name not in names:
                raise ConfigError(f"{path}: profile {profile!r} changes model entry {name!r}, which does not exist "
                                  f"(entries: {', '.join(map(str, names))})")
            if not isinstance(changes, dict):
                raise ConfigError(f"{path}: profile {profile!r}: models.{name} must be a mapping")
            entries[names[name]] = deep_merge(entries[names[name]], changes)
        out["models"] = entries
    elif models_overlay is not None:
        raise ConfigError(f"{path}: profile {profile!r}: 'models' must be a list or a mapping of entry names")
    return out


def load_blend_config(name_or_path: str | Path, profile: str = "full") -> BlendConfig:
    """Read a blend config (a path or a shipped name) and apply ``profile``'s overlay.

    A blend config without that profile is used as it is (its models must still have the
    profile); ``full`` is the top level.
    """
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path)
    if "models" not in raw:
        raise ConfigError(f"{path}: not a blend config (no 'models' list)"
                          + (f"; it looks like a model config: use `moakit train {name_or_path}`" if "model" in raw else ""))
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must be a mapping")
    if profile != "full" and profile in profiles:
        raw = _overlay(raw, profiles[profile] or {}, path, profile)
    _check_skipped(raw, path, profile)
    try:
        return BlendConfig(**raw, profile=profile, source=str(path))
    except ValidationError as exc:
        raise ConfigError(f"{path} (profile {profile}): {format_errors(exc)}") from exc
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _check_skipped(raw: dict, path: Path, profile: str) -> None:
    """Every entry a profile's ``skip_models`` names must exist (a typo would skip nothing)."""
    skip = raw.get("skip_models")
    if not isinstance(skip, dict) or not isinstance(skip.get("models"), list):
        return  # pydantic reports the shape
    names = [e.get("name") for e in raw.get("models") or [] if isinstance(e, dict)]
    unknown = [n for n in skip["models"] if n not in names]
    if unknown:
        raise ConfigError(f"{path}: profile {profile!r}: skip_models names entry {unknown[0]!r}, which does not "
                          f"exist (entries: {', '.join(map(str, names))})")


def skip_message(config: BlendConfig) -> str | None:
    """The line printed when a run of ``config`` starts: which entries its profile leaves
    out and why (None: none left out)."""
    skip = config.skip_models
    if skip is None:
        return None
    return f"profile {config.profile!r} leaves out {', '.join(skip.models)}: {skip.reason}"


def _entry_config_path(entry: ModelEntry, blend_source: str) -> Path:
    candidate = Path(entry.config)
    if not candidate.is_absolute() and blend_source and not candidate.exists():
        beside = Path(blend_source).parent / candidate
        if beside.exists():
            return beside
    try:
        return resolve_config_path(entry.config)
    except ConfigError as exc:
        raise ConfigError(f"model entry {entry.name!r}: {exc}") from None


def _model_profile(entry: ModelEntry, path: Path, profile: str, fallback: dict[str, str]) -> str:
    """The profile to load ``entry``'s model config with: ``profile`` or its fallback."""
    if profile == "full":
        return profile
    available = list((read_yaml(path).get("profiles") or {}).keys())
    if profile in available:
        return profile
    alternative = fallback.get(profile)
    if alternative is not None and (alternative == "full" or alternative in available):
        return alternative
    hint = (f"; the fallback {alternative!r} (model_profile_fallback) is missing too" if alternative
            else f"; add a {profile!r} profile to it or map {profile!r} in the blend config's model_profile_fallback")
    raise ConfigError(f"model entry {entry.name!r} ({path}): no profile {profile!r} "
                      f"(available: full{''.join(', ' + p for p in available)}){hint}")


def resolve_models(config: BlendConfig) -> dict[str, RunConfig]:
    """Every entry's model config, resolved for the blend's profile (with fallbacks)."""
    resolved: dict[str, RunConfig] = {}
    for entry in config.models:
        path = _entry_config_path(entry, config.source)
        used = _model_profile(entry, path, config.profile, config.model_profile_fallback)
        try:
            resolved[entry.name] = load_config(path, profile=used, seeds=entry.seeds, folds=entry.folds)
        except ConfigError as exc:
            raise ConfigError(f"model entry {entry.name!r}: {exc}") from None
    return resolved


def check_models(configs: dict[str, RunConfig], data: MoAData) -> None:
    """Fail before any training if a model is unknown, its params are invalid, or the data
    lacks what it needs; the error names the entry."""
    from moakit.validate import check_training_rows

    check_training_rows(data)  # all controls: nothing to learn from
    for name, cfg in configs.items():
        where = f"model entry {name!r} ({cfg.source or cfg.model})"
        try:
            model = check_config(cfg, data)
        except ConfigError as exc:
            raise EntryConfigError(f"{where}: {exc}") from None
        except ValueError as exc:  # unknown model name
            raise WorkflowError(f"{where}: {exc}") from None
        if cfg.cv.scheme == "drug" and data.train.drug_id is None:
            raise WorkflowError(f"{where}: uses the drug-aware CV (cv.scheme: drug), which needs train_drug "
                                f"in the data folder {data.source or ''}".rstrip())
        for stage in model.stages():
            if "nonscored" in (stage.targets, stage.aux_targets) and data.train.nonscored is None:
                raise WorkflowError(f"{where}: stage {stage.name!r} trains on the non-scored targets, which need "
                                    f"train_targets_nonscored in the data folder {data.source or ''}".rstrip())
