"""The few sentences a multi-model run leads with (under the CLI table of `moakit run` /
`moakit demo` and on the report's first screen): the entries the profile left out and why,
the profile's note on the weights, how the weights were chosen, each model and the blend
against the per-target prior and the blend's best member, and why drug-aware OOF losses are
higher than old-CV ones.

Input is plain numbers (the CLI's summary and the report's collected dict both give them),
so the two places say the same thing.
"""

from __future__ import annotations

from typing import Mapping

# Why a drug-aware-CV model's OOF loss is higher than an old-CV model's (one sentence).
DRUG_CV_NOTE = ("Drug-aware CV OOF losses are higher than old-CV ones because its OOF rows are drugs unseen in "
                "training (as the test's are), while the old CV's OOF rows share drugs with its training rows.")


def nested_scores(blend_summary: Mapping) -> dict:
    """From a blend.json: the chosen weights' nested log loss and the best single model's
    (picked the same way, on the other parts); None without a nested evaluation."""
    nested = (blend_summary.get("nested") or {}).get("methods") or {}
    method = str(blend_summary.get("method") or "")
    key = "preset" if method.startswith("preset:") else method
    return {"nested_log_loss": (nested.get(key) or {}).get("log_loss"),
            "best_single_nested_log_loss": (nested.get("best_single") or {}).get("log_loss")}


def _verdict(value: float, reference: float) -> str:
    return f"{'beats' if value < reference else 'does NOT beat'} it ({value / reference - 1:+.2%})"


def headline(models: Mapping[str, Mapping], blend: Mapping | None, prior_test: float | None = None) -> list[str]:
    """The lines. ``models``: name -> {cv, test_log_loss}; ``blend``: {skipped, note,
    choice, nested_log_loss, best_single_nested_log_loss, test_log_loss} (any may be
    missing); ``prior_test``: the per-target prior's (training means) test log loss."""
    blend, lines = blend or {}, []
    if blend.get("skipped"):
        lines.append(f"Left out at this profile: {', '.join(blend['skipped']['models'])}: "
                     f"{blend['skipped']['reason']}")
    if blend.get("note"):
        lines.append(str(blend["note"]))
    choice = blend.get("choice") or {}
    if choice.get("by") == "nested" and "nested_log_loss" in choice:
        sc = choice["nested_log_loss"]
        lines.append(f"Weights chosen by the nested score: {choice['chosen']} (nested log loss: preset "
                     f"{sc['preset']:.6f}, search {choice['search_method']} {sc['search']:.6f}).")
    tests = {n: m["test_log_loss"] for n, m in models.items() if m.get("test_log_loss") is not None}
    if tests and prior_test is not None:
        worse = [n for n, t in tests.items() if t >= prior_test]
        lines.append(f"On the test rows every model beats the per-target prior (training means, {prior_test:.6f})."
                     if not worse else f"On the test rows {', '.join(worse)} do(es) NOT beat the per-target prior "
                     f"(training means, {prior_test:.6f}).")
    n, b = blend.get("nested_log_loss"), blend.get("best_single_nested_log_loss")
    if n is not None and b is not None:
        lines.append(f"Blend nested log loss {n:.6f} vs the best single model's {b:.6f}: {_verdict(n, b)}.")
    if tests and blend.get("test_log_loss") is not None:
        best = min(tests, key=tests.get)
        lines.append(f"Blend test log loss {blend['test_log_loss']:.6f} vs its best member {best}'s "
                     f"{tests[best]:.6f}: {_verdict(blend['test_log_loss'], tests[best])}.")
    cvs = {m.get("cv") for m in models.values()}
    if "drug" in cvs and len(cvs) > 1:
        lines.append(DRUG_CV_NOTE)
    return lines
