"""Which raw input columns drive a trained run's call of one target.

``moakit explain RUN --target NAME`` / :meth:`moakit.MoAModel.explain` attribute one target's
predicted probability to each RAW input column: every gene, every cell line, cp_time and
cp_dose (cp_type is not explained: control rows are predicted 0 by design).

Two methods:

* ``ig``: Captum's Integrated Gradients through the whole fitted model: each stage's
  feature pipeline rebuilt in torch (:mod:`moakit.features.differentiable`: quantile
  transforms, PCA, factor analysis, scalers, row statistics), each network, the fold and
  seed means, the stacked stages' meta-features and a blend's weights. Non-differentiable
  steps (k-means one-hot, UMAP, cp categories) are held constant at the explained row's
  value; the result lists them (``held_constant``). Baseline: the mean profile of the
  control rows of the reference data (else of its treated rows); cp one-hots at their
  reference mean. Networks only (every weighted model of a blend must be one).
* ``permutation``: any model, blends included: the increase of the target's log loss when
  one column (or a group) is shuffled across held-out labelled rows (drugs unseen in
  training: a data folder's ``answers/``), averaged over repeats; its cost is printed.

Both explain the probability, a linear function of the networks' (members') probabilities,
so the run's attribution is exactly the weighted sum of its members' (one member = one
network of the last stage: a seed x fold). The members' attributions give the
**stability** (mean pairwise Spearman correlation across folds within a seed, and across
seed means). **Faithfulness**: a deletion curve, the target's log loss as the top-k
columns are set to their baseline, against k random columns.

The modules: :mod:`.loaded` (the run in memory, raw columns, losses of edited copies),
:mod:`.attribution` (permutation, Integrated Gradients), :mod:`.faithfulness` (stability,
deletion curve), :mod:`.explanation` (:func:`explain`: the whole explanation) and
:mod:`.output` (inputs, saved JSON, summary, plot).
"""

from moakit.explain.attribution import integrated_gradients, permutation_importance
from moakit.explain.explanation import METHODS, explain, resolve_target
from moakit.explain.faithfulness import DELETION_KS, deletion_curve, stability
from moakit.explain.loaded import ExplainError, LoadedRun, column_info, open_run, raw_columns
from moakit.explain.output import Inputs, load_inputs, load_saved, output_path, plot_deletion, save, summary_lines
from moakit.runs import layout

EXPLAIN_DIR = layout.EXPLAIN_DIR  # RUN/explain/<target>.<method>.json

__all__ = ["DELETION_KS", "EXPLAIN_DIR", "METHODS", "ExplainError", "Inputs", "LoadedRun", "column_info",
           "deletion_curve", "explain", "integrated_gradients", "load_inputs", "load_saved", "open_run", "output_path",
           "permutation_importance", "plot_deletion", "raw_columns", "resolve_target", "save", "stability",
           "summary_lines"]
