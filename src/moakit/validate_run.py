"""Checks of a run folder on disk: as it was trained (config.json unedited, weights that fit
their network), the run lock's owner, the temporary files of a killed run, finished before
report / blend. Re-exported by :mod:`moakit.validate` (the checks made before any work)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moakit.runs import layout


# --------------------------------------------------------------------------- a run folder as it was trained


def config_digest(run_dir: str | Path) -> str | None:
    """A digest of a model run's config.json content (key order and spacing aside), which
    its manifest records at training; None when the file cannot be read."""
    import hashlib
    import json

    from moakit.runs import layout

    try:
        content = json.loads((Path(run_dir) / layout.CONFIG).read_text())
    except (OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def check_config_unchanged(run_dir: str | Path, recorded: str | None) -> None:
    """Refuse a model run whose config.json was edited after training (its artifacts were
    made with the recorded one): a ValueError naming the file."""
    if recorded is None:  # runs made before the digest was recorded
        return
    if config_digest(run_dir) != recorded:
        raise ValueError(f"{Path(run_dir) / layout.CONFIG}: edited after training (its content differs from the "
                         "config manifest.json recorded); its artifacts were made with the original: restore it "
                         "or retrain")


class ArtifactError(ValueError):
    """A saved artifact that does not fit the rest of its run folder; the message names it."""


def load_weights(module, path: str | Path) -> None:
    """``module.load_state_dict`` of the state dict ``path`` (read as data), with a
    mismatch (another shape, other layers) an ArtifactError naming that file."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ArtifactError(f"{path}: does not fit the network its spec.json describes ({detail}); the run folder "
                            "is damaged: retrain it, or copy the whole run folder again") from None


# --------------------------------------------------------------------------- the run lock's owner


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where unknown."""
    import os

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, after the command name
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:80]


def pid_reused(pid: int, started: str | None) -> bool:
    """True when the live process ``pid`` started after the lock was taken (``started``,
    local time ``%Y-%m-%dT%H:%M:%S``): the lock's own process is gone and the system gave
    its pid to another one. False where that cannot be told."""
    import time

    begun = _process_start(pid)
    if begun is None or not started:
        return False
    try:
        taken = time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return False
    return begun > taken + 2.0  # clock ticks and whole seconds: a margin


def lock_held_message(run_dir: Any, lock: Path, pid: int, owner: dict) -> str:
    """Why a run folder is locked, and how to clear the lock if its run is gone."""
    command = _command(pid)
    looks = "moakit" in command or "python" in command
    who = f"pid {pid} on host {owner.get('host')}, since {owner.get('started', '?')}"
    hint = (f"wait for it or use another --out; if no moakit run works here any more (process {pid} is "
            f"`{command or '?'}`{'' if looks else ', which is not moakit: its pid was reused'}), delete {lock}")
    return f"{run_dir}: another moakit run works in this folder ({who}); {hint}"


# --------------------------------------------------------------------------- leftovers of a killed run

# what moakit.artifacts.atomic_file / atomic_dir leave beside their target when the process is
# killed (kill -9) before the rename: ".<name>.<8 random chars>" (tempfile: the temporary or
# atomic_dir's backup folder), or ".<name>.old" (the backup name of earlier moakit versions)
_TEMP = re.compile(r"^\.(?!moakit\.lock)(.+)\.([a-z0-9_]{8}|old)$")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_leftovers(folder: str | Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files and folders of atomic writes that a killed run left in
    ``folder`` (and below it; with ``target``, only those of that one name beside it).
    Call with the run folder's lock held: nobody else writes there meanwhile."""
    import os

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    if target is not None:
        for entry in folder.iterdir():
            match = _TEMP.match(entry.name)
            if match and match.group(1) == target:
                _remove(entry)
                removed.append(entry)
        return removed
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if _TEMP.match(name):
                _remove(Path(root) / name)
                removed.append(Path(root) / name)
        dirs[:] = [d for d in dirs if not _TEMP.match(d)]
    return removed


# --------------------------------------------------------------------------- a finished run


def _lock_owner(run_dir: Path) -> int | None:
    """The pid of a live process holding ``run_dir``'s lock (or its workflow's), else None."""
    import json
    import os
    import socket

    from moakit.artifacts import LOCK_FILE, pid_alive

    for folder in (run_dir, run_dir.parent.parent):  # a workflow's models/<name>: the workflow holds it
        try:
            owner = json.loads((folder / LOCK_FILE).read_text())
        except (OSError, ValueError):
            continue
        pid = owner.get("pid") if isinstance(owner, dict) else None
        if isinstance(pid, int) and owner.get("host") == socket.gethostname() and pid != os.getpid() \
                and pid_alive(pid) and not pid_reused(pid, owner.get("started")):
            return pid
    return None


def check_finished(run_dir: str | Path, command: str) -> None:
    """``command`` (report, blend) needs a finished run: a run that is still running, was
    interrupted or failed is a ValueError saying which (and what to do), before any work."""
    from moakit.manifest import read_manifest
    from moakit.runs import layout
    from moakit.validate import folder_kind

    run_dir = Path(run_dir)
    kind = folder_kind(run_dir)
    if kind not in ("model", "workflow"):
        return
    what = "workflow run" if kind == "workflow" else "model run"
    try:
        manifest = read_manifest(run_dir) if (run_dir / layout.MANIFEST).exists() else None
    except ValueError:
        return  # a damaged manifest: the command's own reading names it
    status = manifest.status if manifest is not None else "running"
    if status == "complete":
        return
    if status == "failed":
        raise ValueError(f"{run_dir}: the {what} failed ({manifest.error or 'no error recorded'}); `moakit {command}` "
                         "needs a finished run: fix the cause and rerun the same command (it resumes)")
    pid = _lock_owner(run_dir)
    if pid is not None:
        raise ValueError(f"{run_dir}: the {what} is still running (pid {pid}); `moakit {command}` needs a finished "
                         "run: wait for it to end")
    raise ValueError(f"{run_dir}: the {what} was interrupted before it finished (its process is gone); "
                     f"`moakit {command}` needs a finished run: rerun the same command to resume it")
