"""What the lish-moa columns are: the organisers' public mappings, shipped as package data.

``g-k`` columns are L1000 landmark genes, named by their Entrez gene id; ``c-k`` columns are
PRISM cell lines, named by their CCLE name. Source: LISHarvard/moa_challenge
(https://github.com/LISHarvard/moa_challenge), ``gene_mapping.csv``, ``cell_mapping.csv``,
``cell_info.csv``; copies in ``moakit/data/lish_moa_columns/``.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

import pandas as pd

_PACKAGE = "moakit.data"
_FOLDER = "lish_moa_columns"


def _read(name: str) -> pd.DataFrame:
    text = resources.files(_PACKAGE).joinpath(_FOLDER, name).read_text()
    return pd.read_csv(io.StringIO(text), dtype=str)


@lru_cache(maxsize=1)
def lish_moa_gene_ids() -> dict[str, str]:
    """Kaggle gene column (``g-0`` ... ``g-771``) -> Entrez gene id (as a string)."""
    frame = _read("gene_mapping.csv")
    return dict(zip(frame["new"], frame["old"]))


@lru_cache(maxsize=1)
def lish_moa_cell_lines() -> dict[str, str]:
    """Kaggle cell column (``c-0`` ... ``c-99``) -> CCLE name of the PRISM cell line."""
    mapping = _read("cell_mapping.csv")
    info = _read("cell_info.csv")
    names = dict(zip(info["rid"], info["ccle_name"]))
    return {new: names.get(old, old) for old, new in zip(mapping["old"], mapping["new"])}
