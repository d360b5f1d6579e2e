"""OneCycle schedules of very few optimizer steps (1-epoch smoke runs on small folds).

Regression: with 2 steps in all (epochs x batches per epoch) the warm-up phase was laid out
zero steps long and torch's OneCycleLR divided by zero when it was built, so every fold of
e.g. a Simple NN at ``train.epochs=1`` on an 800-row dataset (2 batches of 256) failed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moakit.nn.blocks import MLP
from moakit.nn.train import TrainParams, fit_network


@pytest.mark.parametrize(("epochs", "rows"), [(1, 64), (1, 100), (2, 64), (1, 192), (1, 256), (3, 100), (1, 600)])
def test_onecycle_trains_at_any_number_of_steps(epochs, rows):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 6)).astype(np.float32)
    Y = (X[:, :2] > 0.5).astype(np.float32)
    torch.manual_seed(0)
    net = MLP(6, 2, [8], [0.0, 0.0], [False, False])
    params = TrainParams(epochs=epochs, batch_size=64, scheduler="onecycle", smoothing=0.0)
    result = fit_network(net, X, Y, X[:20], Y[:20], params, seed=0)
    assert len(result.history) == epochs
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["valid_loss"]) for h in result.history)
    # each epoch starts at a positive learning rate no higher than the schedule's peak
    assert all(0 < lr[0] <= params.max_lr for lr in result.lrs)
