"""Feature engineering: named, fitted, persisted steps over blocks, composed in a Pipeline
declared in config (see :mod:`moakit.features.pipeline`)."""

from moakit.features.pipeline import Pipeline, PipelineConfig, StepConfig, blocks_from_dataset, steps_of_kind
from moakit.features.steps import STEP_KINDS, Blocks, Step, register

__all__ = ["Pipeline", "PipelineConfig", "StepConfig", "blocks_from_dataset", "steps_of_kind", "STEP_KINDS", "Blocks",
           "Step", "register"]
