"""The per-target prior's (training means') log loss on a data folder's test answers.

    .venv/bin/python bench/prior_test.py DATA_DIR [DATA_DIR ...]
"""

import sys

from moakit import metrics
from moakit.data.io import load
from moakit.runs.records import read_test_answers

for folder in sys.argv[1:]:
    data = load(folder)
    names = list(data.train.scored_names)
    y = read_test_answers(folder, data.test.sig_id, names)
    prior = metrics.prior_predictions(data.train.scored, data.train.is_control, len(y))
    score = metrics.score(y, prior, data.test.is_control)
    print(f"{folder}: train {len(data.train)}, test {len(data.test)}, prior test log loss "
          f"{score['log_loss']:.6f} (treated rows {score['log_loss_treated']:.6f})")
