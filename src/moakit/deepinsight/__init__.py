"""DeepInsight: tabular rows rendered as images for pretrained CNNs.

- :class:`LogNormScaler` - the DeepInsight paper's Norm-2 log scaler.
- :class:`FeatureMap` - t-SNE of the features, minimum bounding rectangle, pixel coordinates.
- :class:`Renderer` - vectorised mean/min/max 3-channel rendering (numpy or torch).
- :func:`swap_noise` - the copy-safe swap-noise augmentation.
"""

from moakit.deepinsight.augment import swap_noise
from moakit.deepinsight.featuremap import FeatureMap, bbox_area, feature_groups, min_area_rect_angle
from moakit.deepinsight.render import Renderer
from moakit.deepinsight.scaler import LogNormScaler

__all__ = ["LogNormScaler", "FeatureMap", "Renderer", "swap_noise", "feature_groups", "min_area_rect_angle",
           "bbox_area"]
