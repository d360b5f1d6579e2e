"""A simulated LINCS L1000 (CMap 2020 "beta" release) folder.

:func:`simulate_l1000` writes what a user downloads from LINCS, at a small size:

- ``level5_beta_trt_cp_n<signatures>x<genes>.gctx``: level-5 (z-score-like) signatures x
  genes: 978 landmark genes plus ``n_inferred`` "best inferred" genes, in a shuffled storage
  order; a few vehicle-control (DMSO) signatures are in the same file;
- ``siginfo_beta.txt``: one row per signature (sig_id, pert_id, cmap_name, cell_iname,
  pert_type trt_cp / ctl_vehicle, pert_time, pert_time_unit, pert_dose, pert_dose_unit), plus
  a few rows of shRNA signatures (``trt_sh``) that the matrix does not hold, as in the real
  release, whose siginfo covers every perturbation type;
- ``geneinfo_beta.txt``: gene_id (Entrez), gene_symbol, feature_space (landmark /
  best inferred);
- ``compoundinfo_beta.txt``: pert_id, cmap_name, target, moa; several MoAs of a compound are
  joined by ``|``; some compounds have one row per target; a few have no MoA;
- ``answers/signatures.npz``: the planted truth (what each MoA does to the landmark genes),
  with the keys of :mod:`moakit.data.simulate`'s ``answers/signatures.npz``.

Gene ids: 772 of the 978 landmark genes carry the real Entrez ids of lish-moa's ``g-k``
columns (:func:`moakit.data.column_maps.lish_moa_gene_ids`, shipped package data), so a
run trained on lish-moa data applies to these files; the other 206 landmark genes and the
inferred genes get invented ids and every gene an invented symbol.

Profiles come from the latent-pathway model of :mod:`moakit.data.simulate` (its signature
strengths, toxicities and MoA families), on 978 genes: a row is baseline pathway activity +
amplitude x the compound's effect (the sum of its MoAs' signatures and an off-target part),
mapped to genes, plus a gene-level part, a stress response, cell-line and time shifts and
Student-t noise. The amplitude is the compound's potency x a dose response (Hill curve with
a per-compound EC50) x a time factor x the cell line's responsiveness. Inferred genes are
sparse linear combinations of landmark genes. Its own MoA vocabulary (Drug Repurposing Hub
style, not lish-moa's), 8 cell lines, 6 doses, 2 times. Deterministic for ``seed``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.artifacts import atomic_dir
from moakit.data import simulate, simulate_profiles as base
from moakit.data.simulate_labels import draw_families
from moakit.data.column_maps import lish_moa_gene_ids
from moakit.runs import layout

N_LANDMARK = 978
MOAS = (
    "HDAC inhibitor", "proteasome inhibitor", "tubulin polymerization inhibitor", "topoisomerase inhibitor",
    "CDK inhibitor", "HSP inhibitor", "mTOR inhibitor", "PI3K inhibitor", "MEK inhibitor", "EGFR inhibitor",
    "RAF inhibitor", "JAK inhibitor", "glucocorticoid receptor agonist", "estrogen receptor antagonist",
    "estrogen receptor agonist", "androgen receptor antagonist", "dopamine receptor antagonist",
    "serotonin receptor antagonist", "adrenergic receptor agonist", "adrenergic receptor antagonist",
    "histamine receptor antagonist", "acetylcholine receptor antagonist", "calcium channel blocker",
    "sodium channel blocker", "cyclooxygenase inhibitor", "phosphodiesterase inhibitor", "HMGCR inhibitor",
    "PPAR receptor agonist", "retinoid receptor agonist", "bromodomain inhibitor", "PARP inhibitor",
    "Aurora kinase inhibitor", "ATPase inhibitor", "protein synthesis inhibitor", "DNA alkylating agent",
    "NFkB pathway inhibitor", "tyrosine kinase inhibitor",
    # rare MoAs: 1-3 compounds each (dropped by `moakit dataset l1000 --min-compounds 5`)
    "antioxidant", "bacterial cell wall synthesis inhibitor", "local anesthetic",
)
N_RARE = 3
CELL_LINES = ("A375", "A549", "HA1E", "HCC515", "HT29", "MCF7", "PC3", "VCAP")
DOSES_UM = (0.04, 0.12, 0.37, 1.11, 3.33, 10.0)
TIMES_H = (6, 24)
_TIME_FACTOR = np.array([0.75, 1.0])
CONTROL_SHARE = 0.05
UNANNOTATED_SHARE = 0.05  # compounds without a MoA in compoundinfo
SH_ROWS_SHARE = 0.02  # siginfo rows of shRNA signatures not in the matrix
CONTROL_ID = "DMSO"
# as simulate's planted-truth file
SIGNATURES_FILE = simulate.SIGNATURES_FILE
N_DIRECT_GENES = base.N_DIRECT_GENES


def moa_column(moa: str) -> str:
    """A MoA name as a target column: lower case, runs of other characters -> ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", str(moa).strip().lower()).strip("_")


@dataclass
class _Plan:
    """Signatures before profiles."""

    sig_id: np.ndarray
    compound: np.ndarray  # index into the compounds, -1 for controls
    cell: np.ndarray  # index into CELL_LINES
    time: np.ndarray  # index into TIMES_H
    dose: np.ndarray  # index into DOSES_UM (-1 for controls)


def simulate_l1000(out_dir, n_signatures: int = 4000, seed: int = 0, n_inferred: int = 200,
                   matrix_format: str = "gctx") -> Path:
    """Write a simulated LINCS-style folder at ``out_dir`` (see the module's notes) and
    return its path. ``n_signatures`` signatures in the matrix (treated + controls),
    ``matrix_format`` "gctx" (HDF5) or "gct" (text #1.3). Raises FileExistsError if
    ``out_dir`` exists and is not empty, ValueError for bad arguments."""
    out_dir = Path(out_dir)
    if matrix_format not in ("gctx", "gct"):
        raise ValueError(f"matrix_format must be 'gctx' or 'gct', not {matrix_format!r}")
    if int(n_signatures) < 200:
        raise ValueError(f"n_signatures must be at least 200, not {n_signatures}")
    if int(n_inferred) < 0:
        raise ValueError(f"n_inferred must be >= 0, not {n_inferred}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")
    rng = np.random.default_rng([int(seed), 0x4C31303030])
    genes = _gene_table(int(n_inferred), rng)
    compounds, labels = _compounds(int(n_signatures), rng)
    plan = _plan(int(n_signatures), len(compounds), rng)
    truth: dict[str, np.ndarray] = {}
    values = draw_profiles(plan, labels, genes, rng, truth)
    order = rng.permutation(len(plan.sig_id))  # storage order of the signatures
    gene_order = rng.permutation(len(genes))  # and of the genes
    with atomic_dir(out_dir) as tmp:  # nothing half-written: one rename at the end
        _write(tmp, plan, compounds, genes, values, order, gene_order, matrix_format, rng)
        _write_truth(layout.answers_dir(tmp), truth, genes)
    return out_dir


# --------------------------------------------------------------------------------------
# genes, compounds, signatures


def _symbols(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` unique invented gene symbols (letters + a number, e.g. ``KLDR4``)."""
    letters = np.array(list("ABCDEFGHIKLMNPRSTVWXZ"))
    return _distinct(n, lambda: "".join(rng.choice(letters, rng.integers(3, 5))) + str(rng.integers(1, 20)))


def _distinct(n: int, draw: Callable[[], str]) -> list[str]:
    """The first ``n`` distinct values of repeated ``draw()`` calls, in the order drawn."""
    out: dict[str, None] = {}
    while len(out) < n:
        out.setdefault(draw(), None)
    return list(out)


def _gene_table(n_inferred: int, rng: np.random.Generator) -> pd.DataFrame:
    """gene_id, gene_symbol, feature_space: the 978 landmark genes first (772 with
    lish-moa's Entrez ids, in its g-0.. order), then the inferred genes."""
    real = [int(v) for v in lish_moa_gene_ids().values()]
    n_new = N_LANDMARK - len(real) + n_inferred
    taken = set(real)
    invented: list[int] = []
    for v in rng.permutation(np.arange(100_000, 900_000))[: n_new + len(real)]:
        if int(v) not in taken:
            invented.append(int(v))
        if len(invented) == n_new:
            break
    ids = real + invented
    space = ["landmark"] * N_LANDMARK + ["best inferred"] * n_inferred
    return pd.DataFrame({"gene_id": ids, "gene_symbol": _symbols(len(ids), rng), "feature_space": space})


def _compounds(n_signatures: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """(pert_id, cmap_name, moa per compound; the compounds' 0/1 MoA matrix). Enough
    compounds for ``n_signatures`` (about half are used, at ~7.5 signatures each). MoA popularity is long-tailed,
    every MoA has a compound, the rare MoAs 1-3; a labelled compound has 1-3 MoAs, further
    ones mostly from the family of its first (simulate's families)."""
    n_moa = len(MOAS)
    n_comp = max(n_moa + 10, int(np.ceil(n_signatures / 4)) + 10)
    family = draw_families([moa_column(m) for m in MOAS], rng)
    weight = np.exp(1.0 * rng.standard_normal(n_moa))
    weight[-N_RARE:] = 0.0
    weight /= weight.sum()
    Y = np.zeros((n_comp, n_moa), dtype=np.uint8)
    labelled = rng.random(n_comp) >= UNANNOTATED_SHARE
    # the first labelled compounds (measured first by _plan) cover every MoA
    drugs = np.flatnonzero(labelled)
    rare_counts = rng.integers(1, 4, N_RARE)
    first = np.full(n_comp, -1)
    cover = list(range(n_moa - N_RARE)) + [m for j, m in enumerate(range(n_moa - N_RARE, n_moa))
                                            for _ in range(rare_counts[j])]
    first[drugs[:len(cover)]] = rng.permutation(cover)
    rest = drugs[len(cover):]
    first[rest] = rng.choice(n_moa, size=len(rest), p=weight)
    card = rng.choice([1, 2, 3], size=n_comp, p=[0.8, 0.15, 0.05])
    for d in drugs:
        Y[d, first[d]] = 1
        if first[d] >= n_moa - N_RARE:
            continue  # rare MoAs keep their exact compound count
        for _ in range(card[d] - 1):
            mates = np.flatnonzero((family == family[first[d]]) & (Y[d] == 0) & (weight > 0))
            t = rng.choice(mates) if len(mates) and rng.random() < 0.7 else rng.choice(n_moa, p=weight)
            Y[d, t] = 1
    pert_ids = [f"BRD-K{v:08d}" for v in rng.choice(10**8, n_comp, replace=False)]
    names = _compound_names(n_comp, rng)
    moa = ["|".join(MOAS[j] for j in np.flatnonzero(Y[d])) for d in range(n_comp)]
    return pd.DataFrame({"pert_id": pert_ids, "cmap_name": names, "moa": moa}), Y


def _compound_names(n: int, rng: np.random.Generator) -> list[str]:
    syllables = np.array(["ra", "zo", "mi", "te", "lu", "ba", "so", "ne", "vi", "ka", "do", "fe", "xa", "pi"])
    endings = np.array(["mab", "nib", "stat", "zole", "pril", "sartan", "olol", "mycin", "fen", "dine"])
    return _distinct(n, lambda: "".join(rng.choice(syllables, rng.integers(2, 4))) + rng.choice(endings))


def _plan(n_signatures: int, n_comp: int, rng: np.random.Generator) -> _Plan:
    """Controls, then each compound in 1-4 cell lines x 1-3 doses x 1-2 times, until the
    treated signatures add up (the last compound's cut short; unused compounds stay unused,
    and are not in compoundinfo)."""
    n_ctrl = max(4, int(round(CONTROL_SHARE * n_signatures)))
    rows: list[tuple[int, int, int, int]] = []
    need = n_signatures - n_ctrl
    while len(rows) < need:  # a second pass (replicates) only if the compounds ran out
        for c in range(n_comp):
            cells = rng.choice(len(CELL_LINES), rng.integers(1, 5), replace=False)
            doses = rng.choice(len(DOSES_UM), rng.integers(1, 4), replace=False)
            times = rng.choice(len(TIMES_H), rng.integers(1, 3), replace=False)
            for cell in cells:
                for dose in doses:
                    for time in times:
                        rows.append((c, int(cell), int(time), int(dose)))
            if len(rows) >= need:
                break
    rows = rows[:need]
    ctrl = [(-1, int(rng.integers(len(CELL_LINES))), int(rng.integers(len(TIMES_H))), -1) for _ in range(n_ctrl)]
    table = np.array(ctrl + rows, dtype=int)
    sig = [f"SIM{1 + i // 384:03d}_{CELL_LINES[cell]}_{TIMES_H[t]}H:{chr(65 + (i % 384) // 24)}{1 + i % 24:02d}"
           for i, (_, cell, t, _) in enumerate(table)]
    return _Plan(np.array(sig), table[:, 0], table[:, 1], table[:, 2], table[:, 3])


# --------------------------------------------------------------------------------------
# profiles


def _pathway_loadings(n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """Gene loadings on the pathways (K x genes), as simulate's: 15-80 genes per pathway,
    unit norm per gene."""
    L = np.zeros((base.N_PATHWAYS, n_genes))
    for k in range(base.N_PATHWAYS):
        idx = rng.choice(n_genes, rng.integers(15, 81), replace=False)
        L[k, idx] = rng.standard_normal(len(idx))
    norms = np.linalg.norm(L, axis=0)
    L[:, norms > 0] /= norms[norms > 0]
    return L


def _moa_signatures(family: np.ndarray, n_genes: int, rng: np.random.Generator):
    """(pathway signatures (MoA x K), gene-level signatures (MoA x genes), strengths):
    2-4 pathways each, a family part shared by related MoAs, ``N_DIRECT_GENES`` genes hit
    directly; strengths from simulate (a fifth nearly invisible)."""
    n, K = len(family), base.N_PATHWAYS
    strength = base.draw_strengths(n, rng)
    family_part = rng.standard_normal((family.max() + 1, K)) * (rng.random((family.max() + 1, K)) < 0.08)
    family_part /= np.maximum(np.linalg.norm(family_part, axis=1, keepdims=True), 1e-9)
    own = np.zeros((n, K))
    for t in range(n):
        k = rng.integers(2, 5)
        own[t, rng.choice(K, k, replace=False)] = rng.standard_normal(k) + np.sign(rng.standard_normal(k))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)[:, None]
    own = 0.6 * own + 0.8 * sign * family_part[family]
    own /= np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-9)
    gene = np.zeros((n, n_genes))
    for t in range(n):
        idx = rng.choice(n_genes, N_DIRECT_GENES, replace=False)
        gene[t, idx] = rng.standard_normal(N_DIRECT_GENES) * 0.8
    return own * strength[:, None], gene * strength[:, None], strength


def draw_profiles(plan: _Plan, Y: np.ndarray, genes: pd.DataFrame, rng: np.random.Generator,
              truth: dict) -> np.ndarray:
    """Level-5-like values, signatures x genes (landmark then inferred), float32, 4 decimals."""
    G, K = N_LANDMARK, base.N_PATHWAYS
    names = [moa_column(m) for m in MOAS]
    loadings = _pathway_loadings(G, rng)
    family = draw_families(names, rng)
    m_path, m_gene, strength = _moa_signatures(family, G, rng)
    m_tox = base.draw_toxicities(names, rng)
    n_comp = len(Y)
    idio = rng.standard_normal((n_comp, K)) * (rng.random((n_comp, K)) < 0.06) * 0.9
    c_path = base.SIGNAL * (Y @ m_path) + idio
    c_gene = base.SIGNAL * (Y @ m_gene)
    c_tox = (Y @ m_tox) * rng.uniform(0.5, 1.5, n_comp)
    potency = np.exp(0.6 * rng.standard_normal(n_comp))
    potency[rng.random(n_comp) < 0.12] *= 0.1  # compounds that do next to nothing
    log_ec50 = rng.normal(np.log(0.5), 1.0, n_comp)
    cell_resp = rng.uniform(0.5, 1.2, len(CELL_LINES))
    cell_shift = rng.standard_normal((len(CELL_LINES), G)) * 0.15
    time_shift = rng.standard_normal((len(TIMES_H), G)) * 0.1
    stress = rng.standard_normal(G) * (rng.random(G) < 0.25) * 0.6
    noise_sd = rng.uniform(0.35, 0.7, G)

    treated = plan.compound >= 0
    c = np.where(treated, plan.compound, 0)
    dose = np.asarray(DOSES_UM)[np.maximum(plan.dose, 0)]
    hill = dose / (dose + np.exp(log_ec50[c]))
    amp = potency[c] * hill * 1.6 * _TIME_FACTOR[plan.time] * cell_resp[plan.cell]
    amp *= np.exp(0.25 * rng.standard_normal(len(amp)))
    amp[~treated] = 0.0
    tox = np.where(treated, c_tox[c] * amp, 0.0)
    n = len(plan.sig_id)
    latent = 0.6 * rng.standard_normal((n, K)) + amp[:, None] * c_path[c]
    values = latent @ loadings + amp[:, None] * c_gene[c] + tox[:, None] * stress
    values += cell_shift[plan.cell] + time_shift[plan.time]
    values += rng.standard_t(4, size=(n, G)) * noise_sd
    inferred = _inferred(values, int((genes["feature_space"] != "landmark").sum()), rng)
    out = np.clip(np.concatenate([values, inferred], axis=1), *base.GENE_CLIP)
    truth.update(loadings=loadings, path=m_path, gene=m_gene, strength=strength, toxicity=m_tox)
    return base.round4(out).astype(np.float32)


def _inferred(landmark: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inferred genes: each a sparse combination of 3-6 landmark genes plus noise."""
    W = np.zeros((landmark.shape[1], n))
    for j in range(n):
        idx = rng.choice(landmark.shape[1], rng.integers(3, 7), replace=False)
        W[idx, j] = rng.standard_normal(len(idx)) * 0.5
    return landmark @ W + rng.standard_normal((len(landmark), n)) * 0.3


# --------------------------------------------------------------------------------------
# writing


def _write(folder: Path, plan: _Plan, compounds: pd.DataFrame, genes: pd.DataFrame, values: np.ndarray,
           order: np.ndarray, gene_order: np.ndarray, matrix_format: str, rng: np.random.Generator) -> None:
    from moakit.data.gctx import write_gct, write_gctx

    n, g = values.shape
    matrix = pd.DataFrame(values[order][:, gene_order], index=plan.sig_id[order],
                          columns=genes["gene_id"].astype(str).to_numpy()[gene_order])
    stem = f"level5_beta_trt_cp_n{n}x{g}"
    if matrix_format == "gctx":
        write_gctx(folder / f"{stem}.gctx", matrix)
    else:
        write_gct(folder / f"{stem}.gct", matrix)
    _siginfo(plan, compounds, rng).to_csv(folder / "siginfo_beta.txt", sep="\t", index=False)
    genes.to_csv(folder / "geneinfo_beta.txt", sep="\t", index=False)
    _compoundinfo(compounds, genes, plan, rng).to_csv(folder / "compoundinfo_beta.txt", sep="\t", index=False)


def _siginfo(plan: _Plan, compounds: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    treated = plan.compound >= 0
    c = np.where(treated, plan.compound, 0)
    frame = pd.DataFrame({
        "sig_id": plan.sig_id,
        "pert_id": np.where(treated, compounds["pert_id"].to_numpy()[c], CONTROL_ID),
        "cmap_name": np.where(treated, compounds["cmap_name"].to_numpy()[c], CONTROL_ID),
        "cell_iname": np.asarray(CELL_LINES)[plan.cell],
        "pert_type": np.where(treated, "trt_cp", "ctl_vehicle"),
        "pert_time": np.asarray(TIMES_H)[plan.time],
        "pert_time_unit": "h",
        "pert_dose": np.where(treated, np.asarray(DOSES_UM)[np.maximum(plan.dose, 0)], np.nan),
        "pert_dose_unit": np.where(treated, "uM", ""),
    })
    n_sh = max(2, int(round(SH_ROWS_SHARE * len(frame))))
    sh = pd.DataFrame({
        "sig_id": [f"SHX{1 + i // 384:03d}_{CELL_LINES[i % len(CELL_LINES)]}_96H:{i:04d}" for i in range(n_sh)],
        "pert_id": [f"TRCN{v:010d}" for v in rng.choice(10**9, n_sh, replace=False)],
        "cmap_name": "shRNA", "cell_iname": [CELL_LINES[i % len(CELL_LINES)] for i in range(n_sh)],
        "pert_type": "trt_sh", "pert_time": 96, "pert_time_unit": "h", "pert_dose": np.nan, "pert_dose_unit": "",
    })
    frame = pd.concat([frame, sh], ignore_index=True)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _compoundinfo(compounds: pd.DataFrame, genes: pd.DataFrame, plan: _Plan, rng: np.random.Generator) -> pd.DataFrame:
    """One row per compound used (plus DMSO); a quarter of the labelled compounds get one
    row per target (same moa on each row), as the real file has; one used compound is left
    out (a siginfo compound without an annotation)."""
    used = np.unique(plan.compound[plan.compound >= 0])
    symbols = genes["gene_symbol"].to_numpy()
    rows = []
    for c in used[1:]:  # the first used compound is left out on purpose
        rec = compounds.iloc[c]
        n_targets = int(rng.integers(1, 4))
        targets = list(rng.choice(symbols, n_targets, replace=False))
        split = bool(rec["moa"]) and n_targets > 1 and rng.random() < 0.25
        for tgt in (targets if split else ["|".join(targets)]):
            rows.append({"pert_id": rec["pert_id"], "cmap_name": rec["cmap_name"], "target": tgt, "moa": rec["moa"]})
    rows.append({"pert_id": CONTROL_ID, "cmap_name": CONTROL_ID, "target": "", "moa": ""})
    return pd.DataFrame(rows)


def _write_truth(folder: Path, truth: dict, genes: pd.DataFrame) -> None:
    """``answers/signatures.npz`` with the keys of simulate's, over the landmark genes
    (``gene_columns``: ``g-<Entrez id>``, the names ``moakit dataset l1000`` gives them)."""
    folder.mkdir()
    direct = base.SIGNAL * truth["gene"]
    total = base.SIGNAL * truth["path"] @ truth["loadings"] + direct
    direct_genes = np.sort(np.argsort(-np.abs(direct), axis=1, kind="stable")[:, :N_DIRECT_GENES], axis=1)
    columns = np.array([f"g-{v}" for v in genes["gene_id"].to_numpy()[:N_LANDMARK]])
    np.savez_compressed(folder / SIGNATURES_FILE, targets=np.array([moa_column(m) for m in MOAS]),
                        gene_columns=columns, direct=direct, total=total, direct_genes=direct_genes,
                        strength=truth["strength"], toxicity=truth["toxicity"], signal=np.float64(base.SIGNAL))
