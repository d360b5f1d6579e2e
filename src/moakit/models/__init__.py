"""Every model module is imported here so that its @register runs (the one registry)."""

from moakit.models import simple_nn  # noqa: F401
from moakit.models import three_stage_nn  # noqa: F401
from moakit.models import two_stage_tabnet  # noqa: F401
from moakit.models import resnet_2heads  # noqa: F401
from moakit.models import deepinsight_cnn  # noqa: F401
from moakit.models import cnn1d  # noqa: F401
from moakit.models import label_powerset  # noqa: F401
from moakit.models.estimators import ESTIMATORS, load_estimator, register_estimator  # noqa: F401
from moakit.models.base import (  # noqa: F401
    MODELS, FitContext, Model, StageSpec, get_model_class, make_model, register)
