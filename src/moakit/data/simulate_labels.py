"""The simulator's rows and labels (:mod:`moakit.data.simulate`): drugs, replicates,
treatments, scored / non-scored labels (simulated, or the real label files), and the
train / test split by whole drugs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moakit.data import schema

CONTROL_DRUG = "cacb2b860"
LABEL_FILES = ("train_targets_scored.csv.zip", "train_targets_nonscored.csv.zip", "train_drug.csv.zip")
CONTROL_SHARE = 0.078  # 1,866 of 23,814 real rows
LABELLED_DRUG_SHARE = 0.66  # share of treated drugs (rows) with at least one scored MoA
N_ZERO_NONSCORED = 71

# Replicates per (ordinary) treated drug in the real set: size -> number of drugs.
_REPLICATE_SIZES = np.array([1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 18, 19])
_REPLICATE_COUNTS = np.array([129, 3, 2, 3, 66, 2774, 196, 4, 4, 64, 25, 6, 3, 1], dtype=float)
# The few drugs with hundreds of rows (share of all rows in the real set).
_HEAVY_SHARES = (0.0302, 0.0103, 0.0085, 0.0085, 0.0082, 0.0081, 0.0078, 0.0075)
# Number of scored labels of a labelled drug.
_CARDINALITY = np.array([1, 2, 3, 4, 5, 7])
_CARDINALITY_P = np.array([0.867, 0.106, 0.021, 0.0038, 0.0009, 0.0004])
# Kinase-like MoAs form related families (shared pathway signatures, co-labelled drugs).
_KINASE = re.compile(
    r"kinase|egfr|flt3|kit_|pdgfr|vegfr|raf_|mek_|src_|jak_|btk_|syk_|alk_|fgfr|erbb2|bcr-abl|"
    r"akt_|pi3k|mtor|cdk_|igf-1|tyrosine|gsk_|ikk_|pkc_|p38|chk_|aurora|atm_|atr_|casein|trk"
)


@dataclass
class Labels:
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


def draw_families(names: list[str], rng: np.random.Generator) -> np.ndarray:
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


def draw_simulated_labels(n_rows: int, rng: np.random.Generator) -> Labels:
    """Simulated drugs, replicates and per-drug labels for ``n_rows`` rows (drug 0: the
    controls; drugs 1..n_heavy: the few with hundreds of rows)."""
    sizes, n_heavy = _drug_sizes(n_rows, rng)
    drug_scored, labelled, family = _scored_drug_labels(len(sizes), n_heavy, rng)
    drug_nonscored, partner = _nonscored_drug_labels(drug_scored, labelled, rng)
    drug_ids, drug_index, control, cp_time, cp_dose, sig_id = _simulated_rows(sizes, rng)
    return Labels(sig_id, drug_index, drug_ids, control, cp_time, cp_dose, drug_scored, drug_nonscored,
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
    family = draw_families(names, rng)
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


def read_real_labels(folder: Path, rng: np.random.Generator) -> Labels:
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
    family = draw_families(schema.scored_target_names(), rng)
    return Labels(sig, codes, drug_names, control, cp_time, cp_dose, drug_scored, drug_nonscored, family, partner)


# --------------------------------------------------------------------------------------
# train / test split


def draw_test_split(labels: Labels, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
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
