"""A realistic simulator of lish-moa data.

:func:`simulate` writes a complete lish-moa folder (features, scored / non-scored targets,
drug ids, sample submission, and ``answers/`` with the test labels and the planted
signatures of the targets, ``answers/signatures.npz``). It is moakit's
embedded default data for the demo and the tests and, built on the real label matrices
(``labels_from``), the realistic benchmark dataset.

How the data are made
---------------------
Labels are per drug: every replicate of a drug shares its 206 scored and 402 non-scored
labels. Simulated labels follow the facts of the real set: about 8 % control rows (one
"drug", ``cacb2b860``, all targets zero), drugs of mostly 6 replicates (3 times x 2 doses),
a few of 1-19 and a handful with hundreds of rows; about 40 % of rows without a scored
target; a long-tailed number of positives per target; a few rows with 2-7 targets (mostly
from one family of related MoAs); non-scored labels sparser, mostly on drugs without a
scored MoA, 71 of them never positive.

Profiles come from a latent-pathway model. 772 genes load sparsely on 50 pathways. Each
row is ``baseline pathway activity + amplitude x drug effect``, mapped to genes, plus a
gene-level part, a stress response proportional to cytotoxicity, and Student-t noise.
The drug effect sums the signatures of its MoAs (scored and non-scored; related MoAs,
and a non-scored target and its scored partner, share part of a signature) and an
idiosyncratic off-target effect. Signature strength varies by target, from nearly
invisible to obvious. The amplitude is the drug's potency times dose (D2 stronger) and
time (stronger later) factors. Cell viability (``c-`` columns) drops across the cell
lines with the row's toxicity (large for cytotoxic MoAs such as proteasome or tubulin
inhibitors), so those columns are skewed negative. Values are clipped to [-10, 10]
(genes) and [-10, 6.5] (cells) and written with 4 decimals.

The test set holds drugs unseen in training (whole drugs, about ``test_fraction`` of the
rows; controls are split row-wise); a drug whose removal would leave one of its scored
targets without a positive training row stays in training.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data import schema

CONTROL_DRUG = "cacb2b860"
LABEL_FILES = ("train_targets_scored.csv.zip", "train_targets_nonscored.csv.zip", "train_drug.csv.zip")
FORMATS = ("csv", "parquet")

N_PATHWAYS = 50
GENE_CLIP = (-10.0, 10.0)
CELL_CLIP = (-10.0, 6.5)
CONTROL_SHARE = 0.078  # 1,866 of 23,814 real rows
LABELLED_DRUG_SHARE = 0.66  # share of treated drugs (rows) with at least one scored MoA
N_ZERO_NONSCORED = 71
SIGNATURES_FILE = "signatures.npz"  # in answers/: the planted truth of each scored target
N_DIRECT_GENES = 15  # genes hit directly by each target's signature (besides its pathways)

# Global strength of the MoA signatures, tuned so that a per-target logistic regression
# on the real-label benchmark improves on the prior by roughly a quarter (see
# bench/simulator_baseline.py).
SIGNAL = 1.8

# Replicates per (ordinary) treated drug in the real set: size -> number of drugs.
_REPLICATE_SIZES = np.array([1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 18, 19])
_REPLICATE_COUNTS = np.array([129, 3, 2, 3, 66, 2774, 196, 4, 4, 64, 25, 6, 3, 1], dtype=float)
# The few drugs with hundreds of rows (share of all rows in the real set).
_HEAVY_SHARES = (0.0302, 0.0103, 0.0085, 0.0085, 0.0082, 0.0081, 0.0078, 0.0075)
# Number of scored labels of a labelled drug.
_CARDINALITY = np.array([1, 2, 3, 4, 5, 7])
_CARDINALITY_P = np.array([0.867, 0.106, 0.021, 0.0038, 0.0009, 0.0004])
# Amplitude factors.
_DOSE_FACTOR = np.array([0.65, 1.0])  # D1, D2
_TIME_FACTOR = np.array([0.7, 0.9, 1.0])  # 24, 48, 72 h
_TIME_TOX = np.array([0.55, 0.8, 1.0])
# MoAs that kill cells: strong, broad loss of viability.
_CYTOTOXIC = re.compile(
    r"proteasome|tubulin|topoisomerase|hdac|hsp_|cdk_|dna_alkylating|dna_inhibitor|atpase|"
    r"thymidylate|ribonucleoside|rna_polymerase|protein_synthesis|aurora|plk|bcl_|mdm_|nfkb|"
    r"monopolar_spindle|chk_|atr_kinase|parp|apoptosis|mtor|pi3k|dihydrofolate|membrane_integrity"
)
# Kinase-like MoAs form related families (shared pathway signatures, co-labelled drugs).
_KINASE = re.compile(
    r"kinase|egfr|flt3|kit_|pdgfr|vegfr|raf_|mek_|src_|jak_|btk_|syk_|alk_|fgfr|erbb2|bcr-abl|"
    r"akt_|pi3k|mtor|cdk_|igf-1|tyrosine|gsk_|ikk_|pkc_|p38|chk_|aurora|atm_|atr_|casein|trk"
)


@dataclass
class _Labels:
    """Row-level facts before profiles: ids, drugs, treatment and labels."""

    sig_id: np.ndarray  # (n,) str
    drug_index: np.ndarray  # (n,) int, index into drug_names
    drug_names: np.ndarray  # (n_drugs,) str
    control: np.ndarray  # (n,) bool
    cp_time: np.ndarray  # (n,) int code
    cp_dose: np.ndarray  # (n,) int code
    drug_scored: np.ndarray  # (n_drugs, 206) uint8
    drug_nonscored: np.ndarray  # (n_drugs, 402) uint8
    family: np.ndarray  # (206,) family index of each scored target
    partner: np.ndarray  # (402,) scored partner of each non-scored target, -1 if none

    @property
    def scored(self) -> np.ndarray:
        return self.drug_scored[self.drug_index]

    @property
    def nonscored(self) -> np.ndarray:
        return self.drug_nonscored[self.drug_index]


# --------------------------------------------------------------------------------------
# public entry point


def simulate(out_dir, n_rows: int = 6000, seed: int = 0, labels_from: str | Path | None = None,
             test_fraction: float = 0.2, file_format: str = "csv", generator: str = "pathway",
             effect_scale: float = 1.0) -> Path:
    """Write a simulated lish-moa folder at ``out_dir`` and return its path.

    ``n_rows`` rows in all (train + test; ignored with ``labels_from``, where all 23,814
    real rows are used), deterministic for ``seed``. ``labels_from`` is a folder holding the
    real ``train_targets_scored.csv.zip``, ``train_targets_nonscored.csv.zip`` and
    ``train_drug.csv.zip``: profiles are then simulated on the real labels, sig_ids and
    drug ids. ``test_fraction`` of the rows (whole drugs) go to the test split, whose
    labels are written to ``answers/``. ``file_format`` is ``"csv"`` or ``"parquet"``.
    ``generator`` chooses the latent structure of the profiles (``"pathway"``, this module's
    model, or ``"factor"``: :mod:`moakit.data.generators`); labels, drugs and split do not
    depend on it. ``effect_scale`` multiplies the MoA-caused part of the profiles.

    Raises FileExistsError if ``out_dir`` exists and is not empty, FileNotFoundError if a
    label file is missing, ValueError for bad arguments.
    """
    out_dir = Path(out_dir)
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FORMATS)}, not {file_format!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), not {test_fraction}")
    from moakit.data.generators import check_generator, factor_profiles

    check_generator(generator, float(effect_scale))
    if labels_from is None and int(n_rows) < 100:
        raise ValueError(f"n_rows must be at least 100, not {n_rows}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")

    rng = np.random.default_rng([int(seed), 0x6D6F61])
    if labels_from is not None:
        labels = _real_labels(Path(labels_from), rng)
    else:
        labels = _simulated_labels(int(n_rows), rng)
    is_test = _split(labels, float(test_fraction), rng)
    truth: dict[str, np.ndarray] = {}
    if generator == "factor":
        genes, cells = factor_profiles(labels, rng, truth, float(effect_scale))
    else:
        genes, cells = _profiles(labels, rng, truth, float(effect_scale))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write(tmp, labels, is_test, genes, cells, file_format)
        _write_signatures(tmp / "answers" / SIGNATURES_FILE, truth)
        if out_dir.exists():
            if any(out_dir.iterdir()):  # filled meanwhile by someone else
                raise FileExistsError(f"{out_dir}: already exists and is not empty; choose a new folder or remove it")
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------
# labels


def _hex_ids(rng: np.random.Generator, n: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` unique random 9-hex-digit strings, none in ``exclude``."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        for v in rng.integers(0, 16**9, size=n - len(out) + 8):
            s = f"{int(v):09x}"
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return out


def _replicate_plan(sizes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """cp_time and cp_dose codes for drugs with ``sizes`` replicates (rows in drug order).

    A drug's replicates walk through the 6 time x dose combinations in a random order,
    starting a new random order after every 6, so a 6-replicate drug covers each once.
    """
    total = int(sizes.sum())
    within = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    n_cyc = (sizes + 5) // 6
    cycle = np.repeat(np.cumsum(n_cyc) - n_cyc, sizes) + within // 6
    n_cycles = int(cycle.max()) + 1 if total else 0
    perms = np.argsort(rng.random((n_cycles, 6)), axis=1)
    combo = perms[cycle, within % 6]
    return combo // 2, combo % 2


def _families(names: list[str], rng: np.random.Generator) -> np.ndarray:
    """A family index per target: related MoAs (same receptor, kinase groups, random
    small groups otherwise) share part of their signature and co-occur on drugs."""
    n = len(names)
    family = np.full(n, -1)
    next_id = 0
    kinase = [i for i, name in enumerate(names) if _KINASE.search(name)]
    rng.shuffle(kinase)
    for chunk in np.array_split(np.array(kinase, dtype=int), max(1, len(kinase) // 5)):
        family[chunk] = next_id
        next_id += 1
    by_receptor: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if family[i] < 0:
            stem = re.sub(r"_(agonist|antagonist|activator|inhibitor|blocker|modulator)$", "", name)
            by_receptor.setdefault(stem, []).append(i)
    singles = []
    for members in by_receptor.values():
        if len(members) > 1:
            family[members] = next_id
            next_id += 1
        else:
            singles.extend(members)
    singles = np.array(singles, dtype=int)
    rng.shuffle(singles)
    for chunk in np.array_split(singles, max(1, len(singles) // 3)):
        family[chunk] = next_id
        next_id += 1
    return family


def _simulated_labels(n_rows: int, rng: np.random.Generator) -> _Labels:
    """Simulated drugs, replicates and per-drug labels for ``n_rows`` rows (drug 0: the
    controls; drugs 1..n_heavy: the few with hundreds of rows)."""
    sizes, n_heavy = _drug_sizes(n_rows, rng)
    drug_scored, labelled, family = _scored_drug_labels(len(sizes), n_heavy, rng)
    drug_nonscored, partner = _nonscored_drug_labels(drug_scored, labelled, rng)
    drug_ids, drug_index, control, cp_time, cp_dose, sig_id = _simulated_rows(sizes, rng)
    return _Labels(sig_id, drug_index, drug_ids, control, cp_time, cp_dose, drug_scored, drug_nonscored,
                   family, partner)


def _drug_sizes(n_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(rows per drug, number of heavy drugs): the controls first, then the heavy drugs,
    then ordinary drugs with replicate counts drawn from the real set's, summing to
    ``n_rows``."""
    n_ctrl = max(2, int(round(CONTROL_SHARE * n_rows)))
    n_heavy = int(np.clip(round(n_rows / 3000), 1, len(_HEAVY_SHARES)))
    heavy = [max(20, int(round(share * n_rows))) for share in _HEAVY_SHARES[:n_heavy]]
    remaining = n_rows - n_ctrl - sum(heavy)
    p_size = _REPLICATE_COUNTS / _REPLICATE_COUNTS.sum()
    draws = rng.choice(_REPLICATE_SIZES, size=remaining // 3 + 10, p=p_size)
    cum = np.cumsum(draws)
    k = int(np.searchsorted(cum, remaining))
    ordinary = draws[: k + 1].copy()
    ordinary[-1] -= int(cum[k] - remaining)
    ordinary = ordinary[ordinary > 0]
    return np.concatenate([[n_ctrl], heavy, ordinary]).astype(int), n_heavy


def _scored_drug_labels(n_drugs: int, n_heavy: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scored labels per drug, which drugs have a scored MoA, family of each target).

    Target popularity is long-tailed; a labelled drug has 1-7 MoAs, its further MoAs
    mostly from the family of its first. Every target gets at least one drug while there
    are drugs enough; the heavy drugs take frequent targets."""
    names = schema.scored_target_names()
    n_s = len(names)
    weight = np.exp(1.2 * rng.standard_normal(n_s))
    weight /= weight.sum()
    family = _families(names, rng)
    drug_scored = np.zeros((n_drugs, n_s), dtype=np.uint8)
    labelled = rng.random(n_drugs) < LABELLED_DRUG_SHARE
    labelled[0] = False  # controls
    labelled[1:1 + n_heavy] = rng.random(n_heavy) < 0.9
    labelled[1] = True
    cardinality = rng.choice(_CARDINALITY, size=n_drugs, p=_CARDINALITY_P / _CARDINALITY_P.sum())
    cardinality[1:1 + n_heavy] = np.minimum(cardinality[1:1 + n_heavy], 3)
    drugs = np.flatnonzero(labelled)
    ordinary_drugs = drugs[drugs > n_heavy]
    rng.shuffle(ordinary_drugs)
    first = np.empty(n_drugs, dtype=int)
    cover = min(n_s, len(ordinary_drugs))
    first[ordinary_drugs[:cover]] = rng.permutation(n_s)[:cover]
    rest = np.concatenate([drugs[drugs <= n_heavy], ordinary_drugs[cover:]])
    first[rest] = rng.choice(n_s, size=len(rest), p=weight)
    for d in drugs:
        drug_scored[d, first[d]] = 1
        for _ in range(cardinality[d] - 1):
            mates = np.flatnonzero((family == family[first[d]]) & (drug_scored[d] == 0))
            if len(mates) and rng.random() < 0.7:
                t = rng.choice(mates)
            else:
                t = rng.choice(n_s, p=weight)
            drug_scored[d, t] = 1
    return drug_scored, labelled, family


def _nonscored_drug_labels(drug_scored: np.ndarray, labelled: np.ndarray,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(non-scored labels per drug, scored partner of each non-scored target): sparser than
    the scored ones, mostly on drugs without a scored MoA, ``N_ZERO_NONSCORED`` targets
    never positive, and a target with a partner co-occurring with it on some drugs."""
    n_drugs, n_s = drug_scored.shape
    n_ns = len(schema.nonscored_target_names())
    active = np.sort(rng.permutation(n_ns)[N_ZERO_NONSCORED:])
    ns_weight = np.zeros(n_ns)
    ns_weight[active] = np.exp(0.9 * rng.standard_normal(len(active)))
    ns_weight /= ns_weight.sum()
    partner = _nonscored_partners(n_s, n_ns, active, rng)
    drug_nonscored = np.zeros((n_drugs, n_ns), dtype=np.uint8)
    p_ns = np.where(labelled, 0.05, 0.5)
    p_ns[0] = 0.0
    has_ns = rng.random(n_drugs) < p_ns
    ns_card = rng.choice([1, 2, 3], size=n_drugs, p=[0.93, 0.05, 0.02])
    ns_drugs = rng.permutation(np.flatnonzero(has_ns))
    cover = min(len(active), len(ns_drugs))
    drug_nonscored[ns_drugs[:cover], rng.permutation(active)[:cover]] = 1  # each active target once
    for d in ns_drugs:
        extra = ns_card[d] - int(drug_nonscored[d].sum())
        if extra > 0:
            p_free = ns_weight * (drug_nonscored[d] == 0)
            drug_nonscored[d, rng.choice(n_ns, size=extra, replace=False, p=p_free / p_free.sum())] = 1
    for j in np.flatnonzero(partner >= 0):
        carriers = np.flatnonzero(drug_scored[:, partner[j]] == 1)
        drug_nonscored[carriers[rng.random(len(carriers)) < 0.15], j] = 1
    return drug_nonscored, partner


def _simulated_rows(sizes: np.ndarray, rng: np.random.Generator):
    """(drug ids, drug index per row, control mask, cp_time, cp_dose, sig_ids) for drugs of
    ``sizes`` rows, drug 0 being the controls (random time and dose)."""
    n_drugs = len(sizes)
    drug_ids = np.array([CONTROL_DRUG, *_hex_ids(rng, n_drugs - 1, {CONTROL_DRUG})])
    drug_index = np.repeat(np.arange(n_drugs), sizes)
    cp_time, cp_dose = _replicate_plan(sizes, rng)
    control = drug_index == 0
    cp_time[control] = rng.integers(0, 3, control.sum())
    cp_dose[control] = rng.integers(0, 2, control.sum())
    sig_id = np.array(["id_" + s for s in _hex_ids(rng, len(drug_index))])
    return drug_ids, drug_index, control, cp_time, cp_dose, sig_id


def _nonscored_partners(n_s: int, n_ns: int, active: np.ndarray, rng: np.random.Generator,
                        cooccur: np.ndarray | None = None) -> np.ndarray:
    """For each non-scored target, the scored target whose signature it shares (or -1).

    With real labels (``cooccur``: non-scored x scored co-occurrence counts), the partner
    is the most co-occurring scored target where there is one.
    """
    partner = np.full(n_ns, -1)
    chosen = active[rng.random(len(active)) < 0.35]
    partner[chosen] = rng.integers(0, n_s, len(chosen))
    if cooccur is not None:
        linked = cooccur.max(axis=1) > 0
        partner[linked] = cooccur[linked].argmax(axis=1)
    return partner


def _read_label_file(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: label file not found (--labels-from needs {', '.join(LABEL_FILES)})")
    try:
        return pd.read_csv(path, dtype={schema.ID_COLUMN: str, schema.DRUG_COLUMN: str})
    except Exception as exc:  # bad zip, parser error
        raise ValueError(f"{path}: cannot be read ({exc})") from exc


def _real_labels(folder: Path, rng: np.random.Generator) -> _Labels:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: labels folder not found (it should hold {', '.join(LABEL_FILES)})")
    scored = _read_label_file(folder, LABEL_FILES[0])
    nonscored = _read_label_file(folder, LABEL_FILES[1])
    drug = _read_label_file(folder, LABEL_FILES[2])
    for frame, name, cols in ((scored, LABEL_FILES[0], schema.scored_target_names()),
                              (nonscored, LABEL_FILES[1], schema.nonscored_target_names()),
                              (drug, LABEL_FILES[2], [schema.DRUG_COLUMN])):
        missing = [c for c in [schema.ID_COLUMN, *cols] if c not in frame.columns]
        if missing:
            raise ValueError(f"{folder / name}: missing column(s) {', '.join(map(repr, missing[:5]))}")
    sig = scored[schema.ID_COLUMN].astype(str).to_numpy()
    if sig.size == 0 or pd.Series(sig).duplicated().any():
        raise ValueError(f"{folder / LABEL_FILES[0]}: sig_ids are empty or not unique")
    for frame, name in ((nonscored, LABEL_FILES[1]), (drug, LABEL_FILES[2])):
        order = pd.Index(frame[schema.ID_COLUMN].astype(str)).get_indexer(sig)
        if (order < 0).any() or len(frame) != len(sig):
            raise ValueError(f"{folder / name}: sig_ids differ from those of {LABEL_FILES[0]}")
        if name == LABEL_FILES[1]:
            nonscored = frame.iloc[order]
        else:
            drug = frame.iloc[order]
    S = scored[schema.scored_target_names()].to_numpy().astype(np.uint8)
    N = nonscored[schema.nonscored_target_names()].to_numpy().astype(np.uint8)
    drug_raw = drug[schema.DRUG_COLUMN].astype(str).to_numpy()

    # group rows by drug (in order of first appearance); labels are per drug (identical
    # across replicates in the real set)
    codes = pd.factorize(drug_raw)[0]
    n_drugs = int(codes.max()) + 1
    first_row = np.unique(codes, return_index=True)[1]
    drug_names = drug_raw[first_row]
    drug_scored = S[first_row]
    drug_nonscored = N[first_row]
    differs = (S != drug_scored[codes]).any(axis=1) | (N != drug_nonscored[codes]).any(axis=1)
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise ValueError(f"{folder}: the labels of sig_id {sig[row]!r} differ from those of other replicates "
                         f"of drug {drug_raw[row]!r}; the simulator needs labels per drug")
    control = drug_raw == CONTROL_DRUG

    # cp_time / cp_dose from the replicate structure: each drug walks through the six
    # combinations; controls are random
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_drugs)
    t_sorted, d_sorted = _replicate_plan(sizes, rng)
    cp_time = np.empty(len(codes), dtype=int)
    cp_dose = np.empty(len(codes), dtype=int)
    cp_time[order], cp_dose[order] = t_sorted, d_sorted
    cp_time[control] = rng.integers(0, 3, control.sum())
    cp_dose[control] = rng.integers(0, 2, control.sum())

    active = np.flatnonzero(drug_nonscored.sum(axis=0) > 0)
    cooccur = N.T.astype(np.float64) @ S.astype(np.float64)
    partner = _nonscored_partners(S.shape[1], N.shape[1], active, rng, cooccur)
    family = _families(schema.scored_target_names(), rng)
    return _Labels(sig, codes, drug_names, control, cp_time, cp_dose, drug_scored, drug_nonscored, family, partner)


# --------------------------------------------------------------------------------------
# train / test split


def _split(labels: _Labels, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean test mask: whole treated drugs (unseen in training) plus a row-wise share
    of the controls. Drugs with more than 19 rows stay in training, and so does a drug
    whose move would leave one of its scored targets without a training drug."""
    n = len(labels.sig_id)
    is_test = np.zeros(n, dtype=bool)
    ctrl_rows = np.flatnonzero(labels.control)
    n_ctrl_test = int(round(test_fraction * len(ctrl_rows)))
    is_test[rng.permutation(ctrl_rows)[:n_ctrl_test]] = True

    sizes = np.bincount(labels.drug_index, minlength=len(labels.drug_names))
    is_ctrl_drug = np.zeros(len(sizes), dtype=bool)
    is_ctrl_drug[np.unique(labels.drug_index[labels.control])] = True
    goal = test_fraction * (n - len(ctrl_rows))
    train_drugs_per_target = labels.drug_scored[sizes > 0].sum(axis=0).astype(int)
    in_test = np.zeros(len(sizes), dtype=bool)
    taken = 0
    for d in rng.permutation(len(sizes)):
        if taken >= goal:
            break
        if is_ctrl_drug[d] or sizes[d] == 0 or sizes[d] > 19 or taken + sizes[d] > goal + 3:
            continue
        targets = np.flatnonzero(labels.drug_scored[d])
        if (train_drugs_per_target[targets] <= 1).any():
            continue
        train_drugs_per_target[targets] -= 1
        in_test[d] = True
        taken += sizes[d]
    is_test |= in_test[labels.drug_index]
    return is_test


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


def _strengths(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-target signature strength: log-normal, with a fifth nearly invisible."""
    s = np.exp(0.5 * rng.standard_normal(n))
    weak = rng.random(n) < 0.2
    s[weak] *= rng.uniform(0.05, 0.25, weak.sum())
    return s


def _toxicities(names: list[str], rng: np.random.Generator) -> np.ndarray:
    tox = np.zeros(len(names))
    for i, name in enumerate(names):
        if _CYTOTOXIC.search(name):
            tox[i] = rng.uniform(1.0, 3.0)
        elif rng.random() < 0.12:
            tox[i] = rng.uniform(0.2, 0.9)
    return tox


def _profiles(labels: _Labels, rng: np.random.Generator,
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
    return _round4(genes), _round4(cells)


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


def _moa_signatures(labels: _Labels, rng: np.random.Generator, truth: dict | None = None) -> tuple[tuple, tuple]:
    """(pathway, gene-level, toxicity) signatures of the scored and of the non-scored
    targets: related scored MoAs share a family part, and a non-scored target with a scored
    partner takes after the partner's signature and toxicity."""
    K = N_PATHWAYS
    scored_names, nonscored_names = schema.scored_target_names(), schema.nonscored_target_names()
    n_s, n_ns = len(scored_names), len(nonscored_names)
    family = labels.family
    family_part = rng.standard_normal((family.max() + 1, K)) * (rng.random((family.max() + 1, K)) < 0.08)
    family_part /= np.maximum(np.linalg.norm(family_part, axis=1, keepdims=True), 1e-9)
    s_strength = _strengths(n_s, rng)
    s_path, s_gene = _signatures(n_s, family, s_strength, rng, family_part)
    ns_strength = _strengths(n_ns, rng)
    ns_path, ns_gene = _signatures(n_ns, np.zeros(n_ns, dtype=int), ns_strength, rng)
    partner = labels.partner
    linked = partner >= 0
    ns_path[linked] = 0.8 * s_path[partner[linked]] + 0.5 * ns_path[linked]
    ns_gene[linked] = 0.8 * s_gene[partner[linked]] + 0.5 * ns_gene[linked]
    if truth is not None:  # the scored targets' planted truth, before anything else draws
        truth.update(path=s_path, gene=s_gene, strength=s_strength)
    s_tox = _toxicities(scored_names, rng)
    ns_tox = _toxicities(nonscored_names, rng) * 0.7
    ns_tox[linked] = np.maximum(ns_tox[linked], 0.8 * s_tox[partner[linked]])
    return (s_path, s_gene, s_tox), (ns_path, ns_gene, ns_tox)


def _drug_effects(labels: _Labels, rng: np.random.Generator, truth: dict | None = None,
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


def _row_amplitudes(labels: _Labels, effects: _DrugEffects,
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


def _gene_profiles(labels: _Labels, effects: _DrugEffects, amp: np.ndarray, tox: np.ndarray, loadings: np.ndarray,
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


def _cell_profiles(labels: _Labels, effects: _DrugEffects, amp: np.ndarray, tox: np.ndarray,
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


def _round4(x: np.ndarray) -> np.ndarray:
    """Round to 4 decimals so that every value prints with at most 4 (no -0.0)."""
    return np.rint(x * 1e4) / 1e4 + 0.0


# --------------------------------------------------------------------------------------
# writing


def _write(folder: Path, labels: _Labels, is_test: np.ndarray, genes: np.ndarray, cells: np.ndarray,
           file_format: str) -> None:
    (folder / "answers").mkdir()
    scored_names, nonscored_names = schema.scored_target_names(), schema.nonscored_target_names()
    scored, nonscored = labels.scored, labels.nonscored
    drug_of_row = labels.drug_names[labels.drug_index]
    for split, mask in (("train", ~is_test), ("test", is_test)):
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(labels.sig_id[rows], kind="stable")]
        ids = labels.sig_id[rows]
        features = {
            schema.ID_COLUMN: ids,
            "cp_type": np.array(schema.CP_TYPES)[labels.control[rows].astype(int)],
            "cp_time": np.array(schema.CP_TIMES)[labels.cp_time[rows]],
            "cp_dose": np.array(schema.CP_DOSES)[labels.cp_dose[rows]],
        }
        floats = {**{c: genes[rows, j] for j, c in enumerate(schema.GENE_COLUMNS)},
                  **{c: cells[rows, j] for j, c in enumerate(schema.CELL_COLUMNS)}}
        target_dir = folder if split == "train" else folder / "answers"
        _write_table(folder / f"{split}_features", {**features, **floats}, file_format)
        _write_table(target_dir / f"{split}_targets_scored",
                     {schema.ID_COLUMN: ids, **{c: scored[rows, j] for j, c in enumerate(scored_names)}}, file_format)
        _write_table(target_dir / f"{split}_targets_nonscored",
                     {schema.ID_COLUMN: ids, **{c: nonscored[rows, j] for j, c in enumerate(nonscored_names)}},
                     file_format)
        _write_table(target_dir / f"{split}_drug", {schema.ID_COLUMN: ids, schema.DRUG_COLUMN: drug_of_row[rows]},
                     file_format)
        if split == "test":
            half = np.full(len(rows), 0.5)
            _write_table(folder / "sample_submission", {schema.ID_COLUMN: ids, **{c: half for c in scored_names}},
                         file_format)


def _write_signatures(path: Path, truth: dict) -> None:
    """``answers/signatures.npz``: what each scored target does to the genes, at unit
    amplitude (a row's effect is its drug's potency x dose x time factor times this).

    Arrays: ``targets`` (206 names), ``gene_columns`` (772), ``direct`` (206 x 772: the
    gene-level part, nonzero on the target's ``N_DIRECT_GENES`` directly hit genes),
    ``total`` (206 x 772: direct part + the target's pathway activity mapped to the genes
    through the loadings, family part included), ``direct_genes`` (206 x 15 sorted column
    indices), ``strength`` (206: the target's signature strength; about a fifth nearly
    invisible), ``toxicity`` (206: the loss of cell viability it causes), ``signal``
    (the global factor already applied to ``direct`` and ``total``). Written from values
    already drawn: the random stream and every other file are unchanged."""
    signal = float(truth.get("signal", SIGNAL))  # (the generator's strength x effect_scale)
    direct = signal * truth["gene"]
    total = signal * truth["path"] @ truth["loadings"] + direct
    direct_genes = np.sort(np.argsort(-np.abs(direct), axis=1, kind="stable")[:, :N_DIRECT_GENES], axis=1)
    np.savez_compressed(path, targets=np.array(schema.scored_target_names()),
                        gene_columns=np.array(schema.GENE_COLUMNS), direct=direct, total=total,
                        direct_genes=direct_genes, strength=truth["strength"], toxicity=truth["toxicity"],
                        signal=np.float64(signal))


def _write_table(stem: Path, columns: dict[str, np.ndarray], file_format: str) -> None:
    """Write columns (str, int or 4-decimal float arrays) as ``stem.csv`` or ``stem.parquet``."""
    import pyarrow as pa

    arrays = []
    for values in columns.values():
        if values.dtype.kind in "US" or values.dtype == object:
            arrays.append(pa.array(values.astype(str), type=pa.string()))
        elif values.dtype.kind == "f":
            arrays.append(pa.array(values.astype(np.float32 if file_format == "parquet" else np.float64)))
        else:
            arrays.append(pa.array(values.astype(np.int64)))
    table = pa.Table.from_arrays(arrays, names=list(columns))
    if file_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, stem.with_name(stem.name + ".parquet"), compression="zstd")
        return
    import pyarrow.csv as pcsv

    with open(stem.with_name(stem.name + ".csv"), "wb") as fh:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(list(columns))  # some names hold commas
        fh.write(header.getvalue().encode())
        pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style="none"))
