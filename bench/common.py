"""What the benchmark scripts share: where things are, the realistic data, report writing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "lish-moa-labels"
OUT = REPO / "bench" / "out"


def ready_for_realistic_data(threads: int) -> bool:
    """The start of a benchmark on the realistic data: False (with a message) when the real
    label files are absent, else set torch's thread count and return True."""
    if not LABELS.exists():
        print(f"skipped: the benchmark labels {LABELS} are absent", file=sys.stderr)
        return False
    import torch

    torch.set_num_threads(threads)
    return True


def realistic_data_dir(seed: int = 0) -> Path:
    """The realistic benchmark folder (simulated profiles on the REAL labels), made once."""
    from moakit.data.simulate import simulate

    data_dir = OUT / "data" / f"realistic-seed{seed}"  # all 23,814 rows on the real labels
    if not data_dir.exists():
        tmp = data_dir.with_name(data_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        simulate(tmp, seed=seed, labels_from=LABELS)
        tmp.rename(data_dir)  # a half-written folder is never taken for data
    return data_dir


def write_report(path: str | Path, lines: list[str]) -> None:
    """Write a markdown report and echo it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_result(path: str | Path, result: dict) -> None:
    """Add the machine's load (``uptime``) to ``result``, write it as JSON to ``path`` and print it."""
    import json
    import subprocess

    result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    Path(path).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
