"""The simulator's profiles (:mod:`moakit.data.simulate`): the latent-pathway model of
gene expression and cell viability, with the planted MoA signatures."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from moakit.data import schema
from moakit.data.simulate_labels import Labels

N_PATHWAYS = 50
GENE_CLIP = (-10.0, 10.0)
CELL_CLIP = (-10.0, 6.5)
N_DIRECT_GENES = 15  # genes hit directly by each target's signature (besides its pathways)

# Global strength of the MoA signatures, tuned so that a per-target logistic regression
# on the real-label benchmark improves on the prior by roughly a quarter (see
# bench/simulator_baseline.py).
SIGNAL = 1.8

# Amplitude factors.
_DOSE_FACTOR = np.array([0.65, 1.0])  # D1, D2
_TIME_FACTOR = np.array([0.7, 0.9, 1.0])  # 24, 48, 72 h
_TIME_TOX = np.array([0.55, 0.8, 1.0])
# MoAs that kill cells: strong, broad loss of viability.
CYTOTOXIC = re.compile(
    r"proteasome|tubulin|topoisomerase|hdac|hsp_|cdk_|dna_alkylating|dna_inhibitor|atpase|"
    r"thymidylate|ribonucleoside|rna_polymerase|protein_synthesis|aurora|plk|bcl_|mdm_|nfkb|"
    r"monopolar_spindle|chk_|atr_kinase|parp|apoptosis|mtor|pi3k|dihydrofolate|membrane_integrity"
)


# --------------------------------------------------------------------------------------
# profiles


def _signatures(n_targets: int, family: np.ndarray, strength: np.ndarray, rng: np.random.Generator,
                family_part: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pathway (n_targets x K) and gene-level (n_targets x genes) signatures."""
    own = np.zeros((n_targets, N_PATHWAYS))
    for t in range(n_targets):
        k = rng.integers(2, 5)
        own[t, rng.choice(N_PATHWAYS, k, replace=False)] = rng.standard_normal(k) + np.sign(rng.standard_normal(k))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    if family_part is not None:
        shared = family_part[family]
        sign = np.where(rng.random(n_targets) < 0.2, -1.0, 1.0)[:, None]  # e.g. agonist vs antagonist
        own = 0.6 * own + 0.8 * sign * shared
        own /= np.linalg.norm(own, axis=1, keepdims=True)
    pathway = own * strength[:, None]
    gene = np.zeros((n_targets, schema.N_GENES))
    for t in range(n_targets):
        idx = rng.choice(schema.N_GENES, N_DIRECT_GENES, replace=False)
        gene[t, idx] = rng.standard_normal(N_DIRECT_GENES) * 0.8
    gene *= strength[:, None]
    return pathway, gene


def draw_strengths(n: int, rng: np.random.Generator, sd: float = 0.5,
               weak_range: tuple[float, float] = (0.05, 0.25)) -> np.ndarray:
    """Per-target signature strength: log-normal (log sd ``sd``), with a fifth nearly
    invisible (scaled by a factor drawn from ``weak_range``)."""
    s = np.exp(sd * rng.standard_normal(n))
    weak = rng.random(n) < 0.2
    s[weak] *= rng.uniform(*weak_range, weak.sum())
    return s


def draw_toxicities(names: list[str], rng: np.random.Generator) -> np.ndarray:
    tox = np.zeros(len(names))
    for i, name in enumerate(names):
        if CYTOTOXIC.search(name):
            tox[i] = rng.uniform(1.0, 3.0)
        elif rng.random() < 0.12:
            tox[i] = rng.uniform(0.2, 0.9)
    return tox


def draw_profiles(labels: Labels, rng: np.random.Generator,
              truth: dict | None = None, effect_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gene expression (n x 772) and cell viability (n x 100), float64, 4 decimals.
    ``truth`` (when given) receives the planted signatures (:func:`_write_signatures`)."""
    loadings, gene_noise_sd = _pathway_loadings(rng)
    effects = _drug_effects(labels, rng, truth, effect_scale)
    if truth is not None:
        truth["loadings"] = loadings
    amp, tox = _row_amplitudes(labels, effects, rng)
    genes = _gene_profiles(labels, effects, amp, tox, loadings, gene_noise_sd, rng)
    cells = _cell_profiles(labels, effects, amp, tox, rng)
    return round4(genes), round4(cells)


@dataclass
class _DrugEffects:
    """What each drug does at full amplitude."""

    path: np.ndarray  # (n_drugs, K) pathway activity: MoA signatures + an off-target part
    gene: np.ndarray  # (n_drugs, 772) gene-level part of the MoA signatures
    tox: np.ndarray  # (n_drugs,) toxicity
    potency: np.ndarray  # (n_drugs,)


def _pathway_loadings(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gene loadings on the pathways (K x 772), per-gene noise sd): each pathway touches
    15-60 genes, some genes none; a gene's loadings have unit norm."""
    G, K = schema.N_GENES, N_PATHWAYS
    L = np.zeros((K, G))
    for k in range(K):
        idx = rng.choice(G, rng.integers(15, 61), replace=False)
        L[k, idx] = rng.standard_normal(len(idx))
    norms = np.linalg.norm(L, axis=0)
    L[:, norms > 0] /= norms[norms > 0]
    return L, rng.uniform(0.35, 0.7, G)


def _moa_signatures(labels: Labels, rng: np.random.Generator, truth: dict | None = None) -> tuple[tuple, tuple]:
    """(pathway, gene-level, toxicity) signatures of the scored and of the non-scored
    targets: related scored MoAs share a family part, and a non-scored target with a scored
    partner takes after the partner's signature and toxicity."""
    K = N_PATHWAYS
    scored_names, nonscored_names = schema.scored_target_names(), schema.nonscored_target_names()
    n_s, n_ns = len(scored_names), len(nonscored_names)
    family = labels.family
    family_part = rng.standard_normal((family.max() + 1, K)) * (rng.random((family.max() + 1, K)) < 0.08)
    family_part /= np.maximum(np.linalg.norm(family_part, axis=1, keepdims=True), 1e-9)
    s_strength = draw_strengths(n_s, rng)
    s_path, s_gene = _signatures(n_s, family, s_strength, rng, family_part)
    ns_strength = draw_strengths(n_ns, rng)
    ns_path, ns_gene = _signatures(n_ns, np.zeros(n_ns, dtype=int), ns_strength, rng)
    partner = labels.partner
    linked = partner >= 0
    ns_path[linked] = 0.8 * s_path[partner[linked]] + 0.5 * ns_path[linked]
    ns_gene[linked] = 0.8 * s_gene[partner[linked]] + 0.5 * ns_gene[linked]
    if truth is not None:  # the scored targets' planted truth, before anything else draws
        truth.update(path=s_path, gene=s_gene, strength=s_strength)
    s_tox = draw_toxicities(scored_names, rng)
    ns_tox = draw_toxicities(nonscored_names, rng) * 0.7
    ns_tox[linked] = np.maximum(ns_tox[linked], 0.8 * s_tox[partner[linked]])
    return (s_path, s_gene, s_tox), (ns_path, ns_gene, ns_tox)


def _drug_effects(labels: Labels, rng: np.random.Generator, truth: dict | None = None,
                  effect_scale: float = 1.0) -> _DrugEffects:
    """Per drug: the sum of its MoAs' signatures plus an idiosyncratic off-target part, its
    toxicity (some drugs toxic off-target) and its potency (a few treated drugs inert)."""
    (s_path, s_gene, s_tox), (ns_path, ns_gene, ns_tox) = _moa_signatures(labels, rng, truth)
    if truth is not None:
        truth.update(toxicity=s_tox, signal=np.float64(SIGNAL * effect_scale))
    n_drugs = len(labels.drug_names)
    Ys = labels.drug_scored.astype(float)
    Yn = labels.drug_nonscored.astype(float)
    idio = rng.standard_normal((n_drugs, N_PATHWAYS)) * (rng.random((n_drugs, N_PATHWAYS)) < 0.06) * 0.9
    signal = SIGNAL * effect_scale  # (x 1.0 is exact: the default data are unchanged)
    drug_path = signal * (Ys @ s_path + Yn @ ns_path) + idio
    drug_gene = signal * (Ys @ s_gene + Yn @ ns_gene)
    drug_tox = (Ys @ s_tox + Yn @ ns_tox) * effect_scale
    toxic_idio = rng.random(n_drugs) < 0.08
    drug_tox += toxic_idio * rng.uniform(0.3, 2.0, n_drugs)
    drug_tox *= rng.uniform(0.5, 1.5, n_drugs)
    potency = np.exp(0.6 * rng.standard_normal(n_drugs))
    inert = rng.random(n_drugs) < 0.12  # treated drugs that do next to nothing here
    potency[inert] *= 0.1
    return _DrugEffects(drug_path, drug_gene, drug_tox, potency)


def _row_amplitudes(labels: Labels, effects: _DrugEffects,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude, toxicity) per row: the drug's potency x dose x time x replicate jitter
    (toxicity: times the drug's toxicity, with its own time course); controls nothing."""
    n = len(labels.sig_id)
    d = labels.drug_index
    amp = effects.potency[d] * _DOSE_FACTOR[labels.cp_dose] * _TIME_FACTOR[labels.cp_time]
    amp *= np.exp(0.25 * rng.standard_normal(n))
    amp[labels.control] = 0.0
    tox = effects.tox[d] * effects.potency[d] * _DOSE_FACTOR[labels.cp_dose] * _TIME_TOX[labels.cp_time]
    tox *= np.exp(0.3 * rng.standard_normal(n))
    tox[labels.control] = 0.0
    return amp, tox


def _gene_profiles(labels: Labels, effects: _DrugEffects, amp: np.ndarray, tox: np.ndarray, loadings: np.ndarray,
                   noise_sd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gene expression: baseline + drug pathway activity mapped to genes, the gene-level
    drug effect, a stress response to toxicity, time and dose shifts, Student-t noise."""
    G, K = schema.N_GENES, N_PATHWAYS
    n = len(labels.sig_id)
    d = labels.drug_index
    time_shift = rng.standard_normal((3, G)) * 0.12
    dose_shift = rng.standard_normal((2, G)) * 0.05
    stress = rng.standard_normal(G) * (rng.random(G) < 0.25) * 0.6
    latent = 0.6 * rng.standard_normal((n, K)) + amp[:, None] * effects.path[d]
    genes = latent @ loadings
    genes += amp[:, None] * effects.gene[d]
    genes += tox[:, None] * stress
    genes += time_shift[labels.cp_time] + dose_shift[labels.cp_dose]
    genes += rng.standard_t(4, size=(n, G)) * noise_sd
    np.clip(genes, *GENE_CLIP, out=genes)
    return genes


def _cell_profiles(labels: Labels, effects: _DrugEffects, amp: np.ndarray, tox: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Cell viability: a shared per-row toxicity lowers viability across cell lines (lines
    differ in sensitivity), plus a little pathway-specific selectivity and noise."""
    C = schema.N_CELLS
    n = len(labels.sig_id)
    sensitivity = rng.uniform(0.5, 1.5, C)
    selectivity = rng.standard_normal((N_PATHWAYS, C)) * 0.08
    kill = tox[:, None] * sensitivity * np.exp(0.25 * rng.standard_normal((n, C)))
    cells = -2.2 * kill - 0.12 * kill**2
    cells += (amp[:, None] * effects.path[labels.drug_index]) @ selectivity
    cells += rng.standard_t(5, size=(n, C)) * 0.45
    np.clip(cells, *CELL_CLIP, out=cells)
    return cells


def round4(x: np.ndarray) -> np.ndarray:
    """Round to 4 decimals so that every value prints with at most 4 (no -0.0)."""
    return np.rint(x * 1e4) / 1e4 + 0.0
