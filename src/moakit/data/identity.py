"""The identity of a training panel as run folders record it: a fingerprint of its rows
(what a resumed run, a workflow and feature reuse must match) and where it came from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from moakit.artifacts import recorded_path
from moakit.data.dataset import MoAData


def data_fingerprint(data: MoAData) -> str:
    """A digest of the train and test rows: signature ids, gene / cell blocks, metadata and
    scored targets (16 hex digits)."""
    h = hashlib.sha256()
    for ds in (data.train, data.test):
        h.update("\n".join(ds.sig_id.tolist()).encode())
        h.update(np.ascontiguousarray(ds.genes).tobytes())
        h.update(np.ascontiguousarray(ds.cells).tobytes())
        for arr in (ds.cp_type, ds.cp_time, ds.cp_dose, ds.scored):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def data_source(data: MoAData, run_dir: str | Path | None = None) -> str:
    """The data folder as a manifest records it ("" when the data has none): relative to
    ``run_dir`` when it lies inside it (a movable run folder), else absolute."""
    if not data.source:
        return ""
    return recorded_path(data.source, run_dir) if run_dir is not None else str(Path(data.source).resolve())
