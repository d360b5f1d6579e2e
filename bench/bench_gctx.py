"""GCTX slab reading: moakit.data.gctx.read_gctx vs cmapPy's parse, on a large simulated file.

Writes a signatures x genes float32 GCTX (default 100,000 x 12,328, ~4.9 GB, moakit's
default chunks), picks 50,000 random signatures and 978 "landmark" genes scattered over
the rows, and reads that slab in a fresh child process per reader, reporting wall seconds
and the child's peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss, read by the child at
its end; its RSS after the imports is reported beside it). Before each read the file's
pages are dropped from the page cache (posix_fadvise DONTNEED on this file only), so
every read starts cold. Each child runs under an address-space cap (--cap-gb) so that a
reader that runs out of memory fails there instead of squeezing the shared machine.

cmapPy runs in its own venv (--cmap-python, e.g. /tmp/cmap-venv/bin/python after
`python -m venv /tmp/cmap-venv && /tmp/cmap-venv/bin/pip install cmapPy`); if it is absent
or fails, the failure is recorded. Results: bench/out/gctx.json (and stdout).

    nice -n 19 .venv/bin/python bench/bench_gctx.py --dir /work/bench-gctx --cmap-python /tmp/cmap-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(reader: str, path: str, selection: str) -> None:
    """Read the slab with ``reader``; print one JSON line."""
    import numpy as np

    sel = json.loads(Path(selection).read_text())
    base = _peak_mb()
    start = time.perf_counter()
    if reader == "moakit":
        from moakit.data.gctx import read_gctx

        frame = read_gctx(path, rid=sel["rid"], cid=sel["cid"])  # signatures x genes, requested order
    else:
        from cmapPy.pandasGEXpress.parse import parse

        frame = parse(path, rid=sel["rid"], cid=sel["cid"]).data_df  # genes x signatures, storage order
    seconds = time.perf_counter() - start
    peak = _peak_mb()  # the reader's own peak, before this script's checks below
    values = frame.to_numpy() if reader == "moakit" else frame.loc[sel["rid"], sel["cid"]].to_numpy().T
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
                      "rss_after_imports_mb": round(base, 1), "output_mb": round(values.nbytes / 2**20, 1),
                      "shape": list(values.shape), "sum": float(values.sum(dtype=np.float64)),
                      "corner": [float(values[0, 0]), float(values[-1, -1])]}))


def _write(path: Path, n_sig: int, n_gene: int, seed: int) -> dict:
    import numpy as np

    from moakit.data.gctx import default_chunks, write_gctx_blocks

    rng = np.random.default_rng(seed)
    cid = [f"BENCH{i:06d}_A549_24H:X{i % 384:03d}" for i in range(n_sig)]
    rid = [str(10_000 + 17 * j) for j in range(n_gene)]
    step = 2000

    def blocks():
        for i in range(0, n_sig, step):
            yield rng.standard_normal((min(step, n_sig - i), n_gene), dtype=np.float32)

    start = time.perf_counter()
    write_gctx_blocks(path, cid, rid, blocks())
    return {"seconds": round(time.perf_counter() - start, 1), "bytes": path.stat().st_size,
            "chunks": list(default_chunks(n_sig, n_gene)), "cid": cid, "rid": rid}


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _run(python: str, reader: str, path: Path, selection: Path, cap_gb: float, timeout: int) -> dict:
    _drop_cache(path)
    cap = int(cap_gb * (1 << 30))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(HERE.parent / "src"))
    cmd = [python, str(Path(__file__).resolve()), "--child", reader, str(path), str(selection)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    except subprocess.TimeoutExpired:
        return {"failed": f"did not finish in {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"exit {proc.returncode} after {time.perf_counter() - start:.0f} s: {tail[:300]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("READER", "PATH", "SELECTION"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench-gctx"), help="where the large file goes")
    ap.add_argument("--signatures", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=12_328)
    ap.add_argument("--select", type=int, default=50_000, help="signatures read")
    ap.add_argument("--landmarks", type=int, default=978, help="genes read")
    ap.add_argument("--cmap-python", default="/tmp/cmap-venv/bin/python")
    ap.add_argument("--cap-gb", type=float, default=12.0, help="address-space cap of each reading process")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--keep", action="store_true", help="keep the large file")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "gctx.json")
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    import numpy as np

    need = args.signatures * args.genes * 4
    args.dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    if free < 1.5 * need:
        sys.exit(f"{args.dir}: {free / 1e9:.1f} GB free, need {1.5 * need / 1e9:.1f} GB")
    path = args.dir / f"bench_n{args.signatures}x{args.genes}.gctx"
    result: dict = {"load_before": os.getloadavg(), "file": str(path)}
    try:
        written = _write(path, args.signatures, args.genes, seed=0)
        rng = np.random.default_rng(1)
        cid = [written["cid"][i] for i in rng.choice(args.signatures, args.select, replace=False)]
        scattered = [written["rid"][j] for j in rng.choice(args.genes, args.landmarks, replace=False)]
        result["write"] = {k: written[k] for k in ("seconds", "bytes", "chunks")}
        runs = {}
        for name, rid in (("scattered", scattered), ("first", written["rid"][: args.landmarks])):
            selection = args.dir / f"selection_{name}.json"
            selection.write_text(json.dumps({"rid": rid, "cid": cid}))
            runs[f"moakit_{name}_genes"] = _run(sys.executable, "moakit", path, selection, args.cap_gb, args.timeout)
            print(name, runs[f"moakit_{name}_genes"], flush=True)
        if Path(args.cmap_python).exists():
            runs["cmapPy_scattered_genes"] = _run(args.cmap_python, "cmapPy", path,
                                                  args.dir / "selection_scattered.json", args.cap_gb, args.timeout)
        else:
            runs["cmapPy_scattered_genes"] = {"failed": f"{args.cmap_python} not found (cmapPy venv not installed)"}
        print("cmapPy", runs["cmapPy_scattered_genes"], flush=True)
        result["reads"] = runs
        ours, theirs = runs["moakit_scattered_genes"], runs["cmapPy_scattered_genes"]
        if "sum" in ours and "sum" in theirs:
            result["same_values"] = bool(np.isclose(ours["sum"], theirs["sum"], rtol=1e-9)
                                         and ours["corner"] == theirs["corner"])
    finally:
        if not args.keep:
            for p in args.dir.glob("*"):
                p.unlink()
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
