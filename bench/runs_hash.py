"""Hash every file of a smoke run of every model and of a blend, to check that a change to
the code that reads / writes run folders leaves them byte-identical.

    python bench/runs_hash.py make DATA DIR [SRC]  # simulate DATA once; train every model (smoke) + blend into DIR
    python bench/runs_hash.py hash DIR OUT.json # one hash per file
    python bench/runs_hash.py diff A.json B.json

``MOAKIT_HASH_MODELS=simple_nn,resnet_2heads``: train only these (the blend needs both).
``SRC``: a source tree (a copy of ``src/``) to run instead of the installed moakit, so that
two versions of the code can be compared on the same machine (e.g. the tree with and
without a change, each made from the working tree).

What legitimately changes from one run to the next is left out of the hashes (and only
that): in JSON files the keys ``created``, ``updated``, ``timings``, every key ending in
``_seconds`` (``fit_seconds`` of done.json, ``node_seconds`` / ``wall_seconds`` of
graph.json ...) and ``seconds_per_epoch`` (a DeepInsight fold's info) and every key of ``graph.json``'s nodes that says when / where / how long
(``start``, ``end``, ``seconds``, ``host``, ``pid``); ``versions`` in manifest.json
(platform / package versions); ``study_name`` (the random id of an in-memory Optuna
study); ``config_digest`` (a digest of the config including its source path; config.json
itself is compared). The path of a shipped config is compared from ``moakit/configs/`` on
(two source trees compared lie in two places). An ``.npz`` is hashed by its arrays (numpy stamps the
archive members with the current time); every other file by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

VOLATILE = {"created", "updated", "timings", "fit_seconds", "start", "end", "seconds", "host", "pid", "worker",
            "versions", "started", "finished", "study_name", "config_digest", "seconds_per_epoch"}
SHIPPED = re.compile(r"^.*/moakit/configs/")  # a shipped config's path: where the source tree lies
MODELS = ["cnn1d", "deepinsight_efficientnet", "deepinsight_resnest", "resnet_2heads", "simple_nn",
          "three_stage_nn", "two_stage_nn_tabnet"]


SRC: str | None = None


def _moakit(*args: str) -> None:
    env = dict(os.environ)
    if SRC:
        env["PYTHONPATH"] = SRC
    subprocess.run([sys.executable, "-m", "moakit", *args], check=True, stdout=subprocess.DEVNULL, env=env)


def make(data: Path, root: Path) -> None:
    if not data.exists():
        _moakit("simulate", str(data), "--rows", "1200", "--seed", "0")
    models = os.environ.get("MOAKIT_HASH_MODELS", ",".join(MODELS)).split(",")  # a subset, to be quick
    for name in models:
        if not (root / name / "metrics.json").exists():
            _moakit("train", name, "--data", str(data), "--out", str(root / name), "--profile", "smoke",
                    "--quiet", "--device", "cpu")
    if not (root / "blend" / "blend.json").exists():
        _moakit("blend", str(root / "simple_nn"), str(root / "resnet_2heads"), "--out", str(root / "blend"),
                "--method", "slsqp", "--method", "optuna", "--trials", "20")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str):
        return SHIPPED.sub("<moakit>/configs/", value)
    return value


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    if path.suffix == ".json":
        h.update(json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).encode())
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for key in sorted(z.files):
                h.update(key.encode())
                h.update(str(z[key].dtype).encode() + str(z[key].shape).encode())
                h.update(np.ascontiguousarray(z[key]).tobytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def hash_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and "report" not in rel.parts and not p.name.startswith(".") \
                and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = file_hash(p)
    return out


def diff(a: dict, b: dict) -> list[str]:
    lines = [f"only before: {k}" for k in a if k not in b] + [f"only after: {k}" for k in b if k not in a]
    lines += [f"differs: {k}" for k in a if k in b and a[k] != b[k]]
    return lines


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cmd = sys.argv[1]
    if cmd == "make":
        global SRC
        SRC = str(Path(sys.argv[4]).resolve()) if len(sys.argv) > 4 else None
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    elif cmd == "hash":
        Path(sys.argv[3]).write_text(json.dumps(hash_tree(Path(sys.argv[2])), indent=1) + "\n")
    elif cmd == "diff":
        lines = diff(json.loads(Path(sys.argv[2]).read_text()), json.loads(Path(sys.argv[3]).read_text()))
        print("\n".join(lines) or "identical")
        sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
