"""Profile generators of the simulator: which latent structure makes the g- and c- columns.

:func:`moakit.data.simulate.simulate` draws the labels, drugs, treatments and the train /
test split first, then hands them to one of the generators below (``generator=``). The
labels, drugs and split depend only on the seed and the labels (never on the generator or
``effect_scale``), so two generators on the same seed give paired datasets: only the
profiles differ.

``pathway`` (the default)
    The latent-pathway model described in :mod:`moakit.data.simulate`.

``factor``
    A low-rank factor model with batch effects, written to share as little as possible
    with ``pathway``:

    - 24 dense latent factors; every gene loads on all of them with heavy-tailed
      (Student-t, 3 degrees of freedom) loadings, so a few genes react strongly to a factor.
      Each row has its own factor activity (biological variation) and Laplace noise.
    - Each MoA (scored and non-scored) moves the factors by a sparse Laplace vector and hits
      10-40 genes directly; its strength is log-normal with about a fifth nearly invisible;
      related MoAs (a family) share part of the vector, and a non-scored target with a scored
      partner takes after the partner.
    - Dose-time interaction: each MoA has its own time course, an impulse response
      ``(h / tau) exp(1 - h / tau)`` with its peak ``tau`` between 12 and 150 hours, so some
      MoAs are strongest at 24 h and fade by 72 h while others still rise. Dose acts through
      a per-drug saturating (Hill) curve: a drug whose EC50 is low is as strong at D1 as at
      D2, one whose EC50 is high about three times stronger at D2.
    - Drug-level off-target effects follow chemical similarity: every drug has a latent
      chemical fingerprint, close to the chemotypes of its MoAs, and its off-target factor
      shift is a fixed linear map of the fingerprint, so similar drugs share off-target
      effects (and drugs of one MoA share some beyond the MoA's own).
    - Cytotoxic MoAs (proteasome, tubulin, HDAC, ...) kill cell lines unequally: a per-MoA,
      per-cell-line sensitivity (log-normal, a fifth of the lines nearly resistant). Killing
      grows with time. Viability saturates: ``-9.5 (1 - exp(-kill / 4))``.
    - Batch effects: the rows of each time point are dealt at random onto plates of about 80
      rows (rows of different drugs, and controls, share a plate); each plate shifts every
      gene (partly through the factors) and every cell line by a plate offset.
    - Nonlinear response: the gene profile saturates, ``10 tanh(x / 10)``.

    Values stay in the lish-moa ranges (genes in [-10, 10], cells in [-10, 6.5], 4 decimals).
    Measured against ``pathway`` (4,000 rows, seed 0; ``tests/test_generators.py`` checks
    both): control rows on one plate are correlated (4 % of control-row pairs have a gene
    correlation |r| > 0.3, none in ``pathway``), and the gene columns are less kurtotic
    (median excess kurtosis over treated rows 1.9 against 4.3: the dense factor part is
    close to Gaussian; the heavy tails are in which genes a factor moves, not in a column).
    ``answers/signatures.npz`` holds the same arrays as for ``pathway``: ``total`` is a
    target's factor shift through the loadings plus its direct gene hits, at its peak time
    and full dose, before the saturation.

``effect_scale`` (both generators) multiplies every MoA-caused part of the profiles: the
MoA signatures and the toxicity that MoAs cause (not noise, batch, off-target or baseline
activity). 1.0 is each generator's calibrated strength; with 1.0 the ``pathway`` profiles
are exactly those of earlier moakit versions.
"""

from __future__ import annotations

import numpy as np

from moakit import choices
from moakit.data import schema
from moakit.data.simulate_profiles import draw_strengths

DEFAULT_GENERATOR = choices.DEFAULT_PROFILE_GENERATOR
GENERATORS = choices.PROFILE_GENERATORS

N_FACTORS = 24
CHEM_DIM = 16
PLATE_ROWS = 80
GENE_SATURATION = 10.0
CELL_FLOOR, CELL_HALF = 9.5, 4.0  # viability -> -CELL_FLOOR (1 - exp(-kill / CELL_HALF))
SIGNATURE_GAIN = 1.6  # the MoA signatures' size relative to the toxicity and chemotype parts
# Strength of every label-dependent part at effect_scale 1, tuned so that a per-target
# logistic regression gains on the prior about as much as on the ``pathway`` data (18 % and
# 19 % on 6,000 rows, seed 0: bench/simulator_baseline.py's model, C chosen from 0.003-0.03).
FACTOR_STRENGTH = 0.4
_HOURS = np.array([24.0, 48.0, 72.0])
_CONCENTRATION = np.array([1.0, 3.0])  # D1, D2 (relative)


def check_generator(name: str, effect_scale: float) -> None:
    """ValueError for an unknown generator or a negative / non-finite effect scale."""
    if name not in GENERATORS:
        raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, not {name!r}")
    if not np.isfinite(effect_scale) or effect_scale < 0:
        raise ValueError(f"effect_scale must be a finite number >= 0, not {effect_scale}")


def factor_profiles(labels, rng: np.random.Generator, truth: dict | None = None,
                    effect_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gene expression (n x 772) and cell viability (n x 100) of the ``factor`` generator
    for ``labels`` (a ``moakit.data.simulate_labels.Labels``); ``truth`` receives the scored
    targets' planted signatures (the keys ``answers/signatures.npz`` is written from)."""
    from moakit.data.simulate_profiles import round4

    strength = FACTOR_STRENGTH * float(effect_scale)
    W = rng.standard_t(3, size=(N_FACTORS, schema.N_GENES)) * 0.22
    moa = _moa_effects(labels, W, rng)
    if truth is not None:
        truth.update(path=moa["s_factor"], gene=moa["s_gene"], loadings=W, strength=moa["s_strength"],
                     toxicity=moa["s_tox"] * strength, signal=np.float64(SIGNATURE_GAIN * strength))
    drugs = _drug_terms(labels, W, rng, strength)
    amp = _row_amplitude(labels, drugs, rng)
    plate = _plates(labels, rng)
    genes = _factor_genes(labels, W, moa, drugs, amp, plate, SIGNATURE_GAIN * strength, rng)
    cells = _factor_cells(labels, moa, drugs, amp, plate, strength, rng)
    return round4(genes), round4(cells)


def _sparse_laplace(n: int, dim: int, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``dim`` columns, each with ``low``..``high`` Laplace entries, unit norm."""
    out = np.zeros((n, dim))
    for i in range(n):
        k = int(rng.integers(low, high + 1))
        out[i, rng.choice(dim, k, replace=False)] = rng.laplace(0.0, 1.0, k)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _moa_toxicity(names: list[str], rng: np.random.Generator) -> np.ndarray:
    from moakit.data.simulate_profiles import CYTOTOXIC

    tox = np.where([bool(CYTOTOXIC.search(n)) for n in names], rng.uniform(0.8, 3.0, len(names)), 0.0)
    mild = (tox == 0) & (rng.random(len(names)) < 0.1)
    tox[mild] = rng.uniform(0.1, 0.7, mild.sum())
    return tox


def _moa_effects(labels, W: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per scored (s_) and non-scored (ns_) target: factor shift, direct gene hits (both
    with strength), gene signature (factor part through W + direct part), time course over
    24/48/72 h, toxicity and per-cell-line sensitivity."""
    names_s, names_ns = schema.scored_target_names(), schema.nonscored_target_names()
    out: dict[str, np.ndarray] = {}
    n_fam = int(labels.family.max()) + 1
    shared = _sparse_laplace(n_fam, N_FACTORS, 2, 5, rng)
    for key, names in (("s", names_s), ("ns", names_ns)):
        n = len(names)
        factor = _sparse_laplace(n, N_FACTORS, 2, 6, rng)
        if key == "s":
            sign = np.where(rng.random(n) < 0.25, -1.0, 1.0)[:, None]
            factor = 0.7 * factor + 0.7 * sign * shared[labels.family]
            factor /= np.linalg.norm(factor, axis=1, keepdims=True)
        direct = np.zeros((n, schema.N_GENES))
        for t in range(n):
            k = int(rng.integers(10, 41))
            direct[t, rng.choice(schema.N_GENES, k, replace=False)] = rng.laplace(0.0, 0.5, k)
        strength = draw_strengths(n, rng, sd=0.6, weak_range=(0.03, 0.2))
        tau = np.exp(rng.uniform(np.log(12.0), np.log(150.0), n))
        course = (_HOURS[None, :] / tau[:, None]) * np.exp(1.0 - _HOURS[None, :] / tau[:, None])
        tox = _moa_toxicity(names, rng) * (0.7 if key == "ns" else 1.0)
        sens = np.exp(0.8 * rng.standard_normal((n, schema.N_CELLS)))
        sens *= np.where(rng.random((n, schema.N_CELLS)) < 0.2, 0.1, 1.0)
        out.update({f"{key}_factor": factor * strength[:, None], f"{key}_gene": direct * strength[:, None],
                    f"{key}_strength": strength, f"{key}_course": course, f"{key}_tox": tox, f"{key}_sens": sens})
    linked = labels.partner >= 0
    p = labels.partner[linked]
    for part in ("factor", "gene", "course", "sens"):
        out[f"ns_{part}"][linked] = 0.8 * out[f"s_{part}"][p] + 0.4 * out[f"ns_{part}"][linked]
    out["ns_tox"][linked] = np.maximum(out["ns_tox"][linked], 0.8 * out["s_tox"][p])
    for key in ("s", "ns"):
        out[f"{key}_signature"] = out[f"{key}_factor"] @ W + out[f"{key}_gene"]
    return out


def _drug_terms(labels, W: np.ndarray, rng: np.random.Generator, strength: float) -> dict[str, np.ndarray]:
    """Per drug: off-target gene shift from its chemical fingerprint, potency, EC50 and
    off-target toxicity. The fingerprint's MoA part (the chemotypes of the drug's MoAs)
    is scaled by ``strength`` like every other label-dependent part."""
    n_drugs = len(labels.drug_names)
    Ys = labels.drug_scored.astype(float)
    chemotype = rng.standard_normal((Ys.shape[1], CHEM_DIM))
    n_moa = np.maximum(Ys.sum(axis=1, keepdims=True), 1.0)
    fingerprint = 1.45 * strength * (Ys @ chemotype) / np.sqrt(n_moa)
    fingerprint += 0.6 * rng.standard_normal((n_drugs, CHEM_DIM))
    chem_map = rng.standard_normal((CHEM_DIM, N_FACTORS)) * (0.9 / np.sqrt(CHEM_DIM))
    gene_map = rng.laplace(0.0, 1.0, (CHEM_DIM, schema.N_GENES)) * (rng.random((CHEM_DIM, schema.N_GENES)) < 0.03)
    off_target = (fingerprint @ chem_map) @ W + 0.3 * fingerprint @ gene_map
    potency = np.exp(0.5 * rng.standard_normal(n_drugs))
    potency[rng.random(n_drugs) < 0.12] *= 0.1  # inert here
    ec50 = np.exp(rng.normal(0.0, 1.2, n_drugs))
    off_tox = np.where(rng.random(n_drugs) < 0.07, rng.uniform(0.3, 1.5, n_drugs), 0.0)
    control = np.zeros(n_drugs, dtype=bool)
    control[np.unique(labels.drug_index[labels.control])] = True
    off_target[control], potency[control], off_tox[control] = 0.0, 0.0, 0.0
    return {"off_target": off_target, "potency": potency, "ec50": ec50, "off_tox": off_tox}


def _row_amplitude(labels, drugs: dict, rng: np.random.Generator) -> np.ndarray:
    """Per row: potency x the drug's saturating dose response (1 at full saturation,
    Hill coefficient 1) x replicate jitter; controls 0."""
    d = labels.drug_index
    conc = _CONCENTRATION[labels.cp_dose]
    hill = conc / (conc + drugs["ec50"][d]) * (1.0 + drugs["ec50"][d] / _CONCENTRATION[1])
    return drugs["potency"][d] * hill * np.exp(0.2 * rng.standard_normal(len(d)))


def _plates(labels, rng: np.random.Generator) -> np.ndarray:
    """Plate index per row: each time point's rows dealt at random onto plates of about
    ``PLATE_ROWS`` rows."""
    n = len(labels.sig_id)
    plate = np.empty(n, dtype=int)
    next_id = 0
    for h in range(3):
        rows = rng.permutation(np.flatnonzero(labels.cp_time == h))
        n_plates = max(1, int(round(len(rows) / PLATE_ROWS)))
        plate[rows] = next_id + np.arange(len(rows)) % n_plates
        next_id += n_plates
    return plate


def _by_time(labels, Y_s: np.ndarray, Y_ns: np.ndarray, moa: dict, part: str, scale: float,
             rows: np.ndarray) -> np.ndarray:
    """The summed MoA ``part`` (signature or sensitivity-weighted toxicity) of ``rows``, at
    each row's time point (MoA time courses)."""
    out = np.zeros((len(rows), moa[f"s_{part}"].shape[1]))
    d, h = labels.drug_index[rows], labels.cp_time[rows]
    for t in range(3):
        at = h == t
        if at.any():
            ws, wn = Y_s[d[at]] * moa["s_course"][:, t], Y_ns[d[at]] * moa["ns_course"][:, t]
            out[at] = scale * (ws @ moa[f"s_{part}"] + wn @ moa[f"ns_{part}"])
    return out


def _factor_genes(labels, W, moa, drugs, amp, plate, scale, rng) -> np.ndarray:
    n, G = len(labels.sig_id), schema.N_GENES
    Y_s, Y_ns = labels.drug_scored.astype(float), labels.drug_nonscored.astype(float)
    n_plates = int(plate.max()) + 1
    plate_shift = (rng.normal(0.0, 0.3, (n_plates, N_FACTORS)) @ W + rng.normal(0.0, 0.15, (n_plates, G)))
    plate_shift *= np.exp(0.4 * rng.standard_normal(n_plates))[:, None]
    time_shift = rng.normal(0.0, 0.1, (3, G))
    noise_sd = rng.uniform(0.3, 0.7, G)
    genes = rng.standard_normal((n, N_FACTORS)) * 0.35 @ W
    genes += rng.laplace(0.0, 1.0, (n, G)) * (noise_sd / np.sqrt(2.0))
    genes += plate_shift[plate] + time_shift[labels.cp_time]
    genes += amp[:, None] * _by_time(labels, Y_s, Y_ns, moa, "signature", scale, np.arange(n))
    ramp = (_HOURS / 72.0)[labels.cp_time]  # off-target effects build up with time
    genes += (amp * ramp)[:, None] * drugs["off_target"][labels.drug_index]
    return GENE_SATURATION * np.tanh(genes / GENE_SATURATION)


def _factor_cells(labels, moa, drugs, amp, plate, strength, rng) -> np.ndarray:
    n, C = len(labels.sig_id), schema.N_CELLS
    Y_s, Y_ns = labels.drug_scored.astype(float), labels.drug_nonscored.astype(float)
    tox_moa = {**moa, "s_kill": moa["s_tox"][:, None] * moa["s_sens"],
               "ns_kill": moa["ns_tox"][:, None] * moa["ns_sens"],
               "s_course": np.ones_like(moa["s_course"]), "ns_course": np.ones_like(moa["ns_course"])}
    growth = ((_HOURS / 72.0) ** 0.7)[labels.cp_time]  # killing accumulates over time
    kill = (amp * growth)[:, None] * _by_time(labels, Y_s, Y_ns, tox_moa, "kill", 1.8 * strength, np.arange(n))
    line_sens = np.exp(0.5 * rng.standard_normal(C))
    kill += (amp * growth * drugs["off_tox"][labels.drug_index])[:, None] * line_sens
    kill *= np.exp(0.2 * rng.standard_normal((n, C)))
    cells = -CELL_FLOOR * (1.0 - np.exp(-kill / CELL_HALF))
    n_plates = int(plate.max()) + 1
    cells += (rng.normal(0.0, 0.25, n_plates)[:, None] + rng.normal(0.0, 0.1, (n_plates, C)))[plate]
    cells += rng.laplace(0.0, 0.3, (n, C))
    return np.clip(cells, -10.0, 6.5)
