"""A model config checked before any work: the model and its params, the selection policy
it supports, and (given the data) that its feature pipelines read only blocks that exist
and that the panel has what the model needs. Training, the workflow, the CLI and the API
call :func:`check_config`; every error is a ConfigError naming the config file and field."""

from __future__ import annotations

from moakit.config import ConfigError, RunConfig, validate_params
from moakit.data.dataset import MoAData
from moakit.models.base import Model, get_model_class


def build_model(config: RunConfig) -> Model:
    """The config's model with its params validated (ConfigError naming the config)."""
    cls = get_model_class(config.model)
    return cls(validate_params(cls.Params, config.params, config.source or config.model))


def check_config(config: RunConfig, data: MoAData | None = None) -> Model:
    """Validate the whole resolved config before any work: the model and its params, the
    seeds, and (given the data) that every feature pipeline reads only blocks that exist.
    Raises ConfigError naming the config file and the field."""
    where = config.source or config.model
    model = build_model(config)
    from moakit.validate import check_param_values

    check_param_values(model.params, where)  # dropout, layer sizes, activation, device: not in a fold job
    if config.selection.policy == "holdout_refit" and not model.supports_refit:
        raise ConfigError(f"{where}: selection.policy: holdout_refit is not available for model {config.model!r} "
                          "(use holdout, last or oof)")
    if data is not None:
        check_pipelines(model, data, where)
        model.check_panel(data, where)
    return model


def check_pipelines(model: Model, data: MoAData, where: str) -> None:
    """Every feature pipeline in the model's params reads only blocks that a step writes
    or the data gives, and its steps fit the panel's block widths and row count."""
    from moakit.features import Pipeline, PipelineConfig, blocks_from_dataset
    from moakit.features.panel import PanelError, plan_pipeline
    from moakit.features.pipeline import CONTROL_BLOCK

    base = blocks_from_dataset(data.train)
    widths: dict[str, int | None] = {b: int(a.shape[1]) for b, a in base.items()}
    available = set(base) | {"meta", CONTROL_BLOCK}
    for field_path, pipeline_config in find_instances(model.params, PipelineConfig, "params"):
        try:
            needed = Pipeline(pipeline_config).external_inputs()
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: {field_path}: {exc}") from None
        unknown = [b for b in needed if b not in available]
        if unknown:
            outputs = [b for b in unknown if b in pipeline_config.output]
            what = f"{field_path}.output" if outputs else f"{field_path}.steps"
            raise ConfigError(f"{where}: {what}: block(s) {unknown} are written by no feature step and "
                              f"are not given by the data (given: {', '.join(sorted(available))})")
        try:
            plan_pipeline(pipeline_config, {**widths, "meta": None}, len(data.train))
        except PanelError as exc:
            raise ConfigError(f"{where}: {field_path}.steps: {exc}") from None


def find_instances(obj, cls, where: str):
    """(field path, value) of every ``cls`` instance inside a pydantic model / list / dict."""
    from pydantic import BaseModel

    if isinstance(obj, cls):
        yield where, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from find_instances(getattr(obj, name), cls, f"{where}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from find_instances(item, cls, f"{where}.{i}")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from find_instances(item, cls, f"{where}.{key}")
