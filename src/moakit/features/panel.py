"""Fitting a feature pipeline to the panel at hand: absent blocks and too-large steps.

A dataset's blocks may be empty (zero columns): the cell block ``c`` of a gene-only panel,
the one-hot ``cp`` of a panel without cp_time / cp_dose. :func:`plan_pipeline` decides,
before anything is fitted, what each step of a pipeline does on such a panel:

- an input block with no columns is dropped from the step's inputs (a quantile transform of
  ``[g, c]`` becomes one of ``[g]``; row statistics of ``[g, c]`` those of ``g``);
- a step left with no input columns at all, or whose component count (``n_components``,
  ``n_clusters``) exceeds the columns of its inputs or the rows, cannot run: a step marked
  ``optional: true`` is skipped (the block it writes is empty, and is dropped in turn from
  later steps and from the output), any other step is an error naming the step and the block.

On lish-moa's blocks nothing changes: the pipeline config comes back as it was (the same
object), so a run of lish-moa data is what it was before panels existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moakit.features.pipeline import PipelineConfig, StepConfig

# parameters that set a step's output width and must not exceed its input columns / rows
SIZE_PARAMS = ("n_components", "n_clusters")


class PanelError(ValueError):
    """A feature step that cannot run on this panel (names the step and the block)."""


def _size(step: "StepConfig") -> tuple[str, int] | None:
    for key in SIZE_PARAMS:
        if key in step.params:
            return key, int(step.params[key])
    return None


def _out_width(step: "StepConfig", inputs: list[str], widths: dict[str, int | None]) -> int | None:
    """Columns of the new block a step writes, where known before fitting (None: unknown,
    but not empty)."""
    size = _size(step)
    if size is not None:
        return size[1]
    if step.kind == "row_stats":
        stats = step.params.get("stats") or [1] * 5
        return len(stats) * (len(inputs) + (1 if len(inputs) > 1 else 0))
    if step.kind == "row_mean":
        return len(inputs)
    known = [widths.get(b) for b in inputs]
    if step.kind == "row_quantile_norm" and all(w is not None for w in known):
        return sum(known)  # type: ignore[arg-type]
    return None


def _problem(step: "StepConfig", inputs: list[str], widths: dict[str, int | None], n_rows: int | None) -> str | None:
    """Why ``step`` cannot run on these widths, or None."""
    if not inputs:
        empty = [b for b in step.inputs]
        return (f"its input block{'s' if len(empty) > 1 else ''} {', '.join(repr(b) for b in empty)} "
                f"{'are' if len(empty) > 1 else 'is'} absent or without columns in this dataset")
    size = _size(step)
    if size is None:
        return None
    key, value = size
    known = [widths.get(b) for b in inputs]
    if all(w is not None for w in known) and value > sum(known):  # type: ignore[arg-type]
        shown = ", ".join(f"{b!r} ({widths[b]})" for b in inputs)
        return f"{key} {value} exceeds the {sum(known)} columns of block(s) {shown}"  # type: ignore[arg-type]
    if n_rows is not None and value > n_rows:
        return f"{key} {value} exceeds the {n_rows} rows it is fitted on (block(s) {', '.join(map(repr, inputs))})"
    return None


def plan_pipeline(config: "PipelineConfig", widths: dict[str, int | None],
                  n_rows: int | None = None) -> tuple["PipelineConfig", list[dict]]:
    """(the pipeline config for blocks of these ``widths``, the skipped steps: name, kind, why).

    ``widths``: columns of each block the caller gives (None: unknown, e.g. the ``meta``
    block before the previous stage has run, or a block not listed);
    ``n_rows``: the rows the steps are fitted on
    (None: not checked). Raises :class:`PanelError` for a step that cannot run and is not
    optional."""
    from moakit.features.pipeline import PipelineConfig

    widths = dict(widths)
    steps, skipped, changed = [], [], False
    for step in config.steps:
        inputs = [b for b in step.inputs if widths.get(b) != 0]
        problem = _problem(step, inputs, widths, n_rows)
        if problem is not None:
            if not step.optional:
                raise PanelError(f"feature step {step.name!r} ({step.kind}): {problem}; mark the step "
                                 "`optional: true` to skip it on such data")
            skipped.append({"name": step.name, "kind": step.kind, "why": problem})
            changed = True
            if step.output is not None:
                widths[step.output] = 0
            continue
        if inputs != step.inputs:
            changed = True
            step = step.model_copy(update={"inputs": inputs})
        if step.output is not None:
            widths[step.output] = _out_width(step, inputs, widths)
        steps.append(step)
    output = [b for b in config.output if widths.get(b) != 0]
    if not output:
        raise PanelError(f"every block of the features output {config.output} has no columns in this dataset")
    if not changed and output == config.output:
        return config, []
    return PipelineConfig(fit_on=config.fit_on, fit_controls=config.fit_controls, steps=steps, output=output), skipped
