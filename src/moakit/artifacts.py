"""Atomic writes of run artifacts: a reader never sees a half-written file or folder.

Files and folders written here get the usual modes under the process umask (0644 / 0755
with umask 022), so a run on a shared filesystem is readable by other users and nodes;
``tempfile`` alone would leave them 0600 / 0700. Also: the run-folder lock
(:func:`run_lock`), paths recorded relative to a run folder (:func:`recorded_path`), and
the refusal of old pickled artifacts (:func:`refuse_pickle`; a run folder is data, never code).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_dir(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it becomes ``target`` by rename.

    Every writer has its own temporary (and backup) name, so concurrent writers of one
    target all succeed and ``target`` is always one writer's complete folder. With
    ``replace`` the last writer wins: a ``target`` already there is renamed away into this
    writer's backup folder, then removed. Without it the first wins: a ``target`` already
    there is kept and FileExistsError raised. Either way no temporary is left behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        _rename_into_place(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# what a rename onto an existing non-empty folder (or a file) fails with
_TAKEN = frozenset({errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR})
_MAX_TRIES = 1000  # each failed try means another writer's rename succeeded meanwhile


def _rename_into_place(tmp: Path, target: Path, replace: bool) -> None:
    backup = None
    try:
        for n in range(_MAX_TRIES):
            try:
                os.rename(tmp, target)  # atomic; succeeds only where target is absent (or an empty folder)
                return
            except OSError as exc:
                if exc.errno not in _TAKEN:
                    raise
                if not replace:
                    raise FileExistsError(exc.errno, f"{target}: written by another writer first") from None
            if backup is None:
                backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            with contextlib.suppress(FileNotFoundError):  # another writer may have moved it away first
                os.rename(target, backup / str(n))
        raise OSError(f"{target}: replaced by other writers {_MAX_TRIES} times while this one tried")
    finally:
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A new empty file beside ``target`` (a unique hidden name) for a writer that opens
    files by path (h5py, pandas); on success renamed onto ``target``, removed on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file beside ``target``; on success rename it onto ``target``."""
    with atomic_path(target) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: set and restore (briefly visible to other threads)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """The JSON value of ``path``; invalid JSON raises ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a JSON text file ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_file(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def read_npy(path: str | Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


# --------------------------------------------------------------------------- recorded paths


def recorded_path(path: str | Path, run_dir: str | Path) -> str:
    """A path as a manifest records it: relative to ``run_dir`` when it lies inside it
    (so the run folder can be moved or copied), else absolute. "" stays ""."""
    if not path:
        return ""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    try:
        return path.relative_to(run_dir).as_posix() or "."
    except ValueError:
        return str(path)


def resolve_recorded(value: str | None, run_dir: str | Path) -> str:
    """The path a manifest recorded (see :func:`recorded_path`), made usable: relative
    ones are taken from ``run_dir``. "" or None gives ""."""
    if not value:
        return ""
    path = Path(value)
    return str(path if path.is_absolute() else Path(run_dir) / path)


# --------------------------------------------------------------------------- pickles

class PickleFormatError(ValueError):
    """A run folder artifact in an old format that is a pickle (it could run code when
    loaded): never loaded; unsupported format, retrain."""


def refuse_pickle(path: str | Path) -> None:
    """Raise :class:`PickleFormatError` for the pickled artifact ``path`` of an older moakit."""
    raise PickleFormatError(
        f"{path}: unsupported format (saved by an older moakit as a pickle, which could run any code when it is "
        "loaded, so it is never loaded); retrain the run with this moakit version (the same command into a new "
        "--out)")


# --------------------------------------------------------------------------- run lock

LOCK_FILE = ".moakit.lock"


class RunLockedError(ValueError):
    """Another live process works in the run folder; the message names its pid and host."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OSError, OverflowError):
        return False
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _create_whole(tmp: str, path: Path, content: dict) -> None:
    """Create ``path`` with ``content`` only if it does not exist (FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive create, then write
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w") as fh:
            json.dump(content, fh)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, log=_log) -> Iterator[Path]:
    """Hold ``run_dir/.moakit.lock`` while a run writes into ``run_dir``.

    A lock held by a live process (this host), or by any process of another host (its
    liveness cannot be checked from here), raises :class:`RunLockedError` naming its pid
    and host. A lock whose process is gone on this host is stale: it is taken over, with a
    message through ``log``. The lock file is created whole (written aside, then hard-linked
    into place), so a reader never sees a half-written one; it is removed on exit.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv[:3])}
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_FILE}.", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(mine, fh)
        os.chmod(tmp, 0o666 & ~current_umask())
        for _ in range(5):
            try:
                _create_whole(tmp, path, mine)
                break
            except FileExistsError:
                pass
            owner = _read_lock(path)
            if owner is None:  # released meanwhile
                continue
            pid, owner_host = owner.get("pid"), owner.get("host")
            where = f"pid {pid} on host {owner_host}" if owner else "an unknown process (unreadable lock file)"
            if owner_host != host or not isinstance(pid, int):
                if owner and owner_host != host:
                    raise RunLockedError(
                        f"{run_dir}: another moakit run works in this folder ({where}, since "
                        f"{owner.get('started', '?')}); wait for it, use another --out, or delete {path} "
                        "if that run is gone")
            elif pid_alive(pid):
                from moakit.validate import lock_held_message, pid_reused

                if not pid_reused(pid, owner.get("started")):  # else: stale, its pid given to another process
                    raise RunLockedError(lock_held_message(run_dir, path, pid, owner))
            # stale: its process is gone (or the file is unreadable): take it over, unless it
            # changed meanwhile (another process took it over first)
            if _read_lock(path) == owner:
                log(f"{run_dir}: taking over a stale lock ({where} is no longer running)")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        else:
            raise RunLockedError(f"{run_dir}: could not take the lock {path}; another run keeps taking it")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    try:
        yield path
    finally:
        if _read_lock(path) == mine:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
