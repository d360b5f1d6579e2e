"""A cache of fitted feature states across runs (``--feature-cache DIR``, ``feature_cache=``
in the API, or the environment variable ``MOAKIT_FEATURE_CACHE``).

A stage-seed's fitted features are looked up by a content key: the run's own key
(:func:`moakit.feature_reuse.stage_key`: model, stage, pipelines with their resolved random
states, data fingerprint) plus a digest of the stage's actual upstream inputs (its ``meta``
block: the earlier stages' predictions, which change with any network setting of those
stages) and the versions of the libraries whose code fits the state. Equal keys mean equal
fits, so a run with the cache gives exactly the results of a run without it. Only models
whose feature fits have a content key take part (as for within-run reuse: feature pipelines,
and models that declare their fit's dependencies, :func:`moakit.feature_reuse.fit_spec`).

Safe like a run folder: an entry is the run's ``features`` folder as saved (a JSON tree plus
``.npz`` arrays, :mod:`moakit.features.safe_state`; nothing is unpickled) and ``entry.json``
with every file's size and SHA-256, checked on every hit. Layout::

    DIR/CACHEDIR.TAG         marks the folder as a cache (backup tools skip it)
    DIR/v1/<key>/entry.json  key, what it is (model, stage), versions, files (size, sha256)
    DIR/v1/<key>/features/   the fitted state, as in a run folder
    DIR/v1/<key>/used        its modification time is the entry's last use (LRU)

Several processes (Ray workers on a shared filesystem included) may use one cache: an entry
is written in a temporary folder beside it and renamed into place whole, so a reader sees
all of it or nothing; when two writers store one key, the first rename wins and the second
discards its copy (both succeed); eviction renames an entry away before deleting it. The
cache is bounded (``--feature-cache-max-gb``, ``MOAKIT_FEATURE_CACHE_MAX_GB``, default 5 GB):
after a store, least-recently-used entries are removed until it fits. A damaged entry (a
file missing, changed or unreadable) is reported with a warning, removed, and the state is
refitted.

Off by default. A run folder already keeps every fitted state and within-run reuse already
fits each distinct state once; the cache pays only when the same data is trained again
(tuning a network setting), and then writes states of up to hundreds of MB (UMAP with its
search index) per stage. Filling a home folder with GBs unasked is worse than one flag;
and the cache Ray workers share must be on a filesystem they all see, which only the user
knows. So the user names the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from moakit.artifacts import atomic_dir, read_json, write_json

ENV_DIR = "MOAKIT_FEATURE_CACHE"
ENV_MAX_GB = "MOAKIT_FEATURE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 5.0
VERSION_DIR = "v1"
ENTRY = "entry.json"
STATE_DIR = "features"
USED = "used"
TAG = "CACHEDIR.TAG"
_TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This folder is a moakit feature cache; it can be deleted at any time.\n")
_STALE_TMP_S = 24 * 3600  # a temporary folder this old is a crashed writer's
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "umap-learn", "pynndescent", "numba")


class FeatureCacheWarning(UserWarning):
    """A cache entry that was ignored (damaged or unreadable), or a state not stored."""


# --------------------------------------------------------------------------- settings


def check_max_gb(value: float | str | None) -> float:
    """The size bound in GB (a positive number); ValueError naming the setting otherwise."""
    if value is None or value == "":
        return DEFAULT_MAX_GB
    try:
        gb = float(value)
    except (TypeError, ValueError):
        gb = float("nan")
    if not gb > 0 or gb == float("inf"):
        raise ValueError(f"feature cache max size: {value!r} is not a positive number of GB")
    return gb


def settings() -> dict | None:
    """The cache the environment names ({"dir", "max_gb"}), or None (no cache). Resolved on
    the driver and passed to the ``features`` nodes, so a Ray worker uses the same one."""
    directory = os.environ.get(ENV_DIR, "").strip()
    if not directory:
        return None
    return {"dir": str(Path(directory).expanduser().resolve()), "max_gb": check_max_gb(os.environ.get(ENV_MAX_GB))}


@contextlib.contextmanager
def using(directory: str | Path | None, max_gb: float | None = None) -> Iterator[dict | None]:
    """Use the cache in ``directory`` bounded to ``max_gb`` (None: as the environment says)
    while the block runs."""
    saved = {k: os.environ.get(k) for k in (ENV_DIR, ENV_MAX_GB)}
    if directory is not None:
        os.environ[ENV_DIR] = str(directory)
    if max_gb is not None:
        os.environ[ENV_MAX_GB] = str(check_max_gb(max_gb))
    try:
        yield settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- keys


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from moakit._version import __version__

    out = {"moakit": __version__}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def cache_key(stage_key: str, inputs: tuple[np.ndarray | None, ...]) -> str:
    """The cache key of a fit: the run's content key, the upstream inputs' bytes, the versions."""
    h = hashlib.sha256()
    h.update(json.dumps({"stage_key": stage_key, "versions": _versions()}, sort_keys=True).encode())
    for a in inputs:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:40]


def _copy_hashed(source: Path, dest: Path) -> tuple[int, str]:
    """Copy ``source`` to ``dest`` (copies, not links: a run folder and the cache never
    share a file, so neither changes or loses one under the other); (bytes, SHA-256)."""
    h, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as fin, open(dest, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            h.update(block)
            fout.write(block)
            size += len(block)
    shutil.copystat(source, dest)
    return size, h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


class DamagedEntry(Exception):
    """An entry whose files do not match its entry.json (or that cannot be loaded)."""


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class FeatureCache:
    """A cache folder (see the module docstring) bounded to ``max_bytes``."""

    root: Path
    max_bytes: int

    @classmethod
    def from_settings(cls, conf: dict) -> "FeatureCache":
        return cls(Path(conf["dir"]), int(check_max_gb(conf.get("max_gb")) * 1e9))

    @property
    def entries_dir(self) -> Path:
        return self.root / VERSION_DIR

    def entry_dir(self, key: str) -> Path:
        return self.entries_dir / key

    def _prepare(self) -> None:
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        tag = self.root / TAG
        if not tag.exists():
            with contextlib.suppress(OSError):
                tag.write_text(_TAG_TEXT)

    # ----------------------------------------------------------------- read

    def restore(self, key: str, target: Path, load: Callable[[Path], object] | None = None):
        """Copy entry ``key``'s state to ``target`` (a folder written whole) and return
        ``load(target)`` (True without ``load``); None on a miss. A damaged entry: a warning,
        the entry removed, None."""
        entry = self.entry_dir(key)
        if not (entry / ENTRY).is_file():
            return None
        try:
            with atomic_dir(target) as tmp:
                self._copy_checked(entry, tmp)
            loaded = load(target) if load is not None else True
        except (DamagedEntry, ValueError, KeyError, TypeError, RuntimeError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            if not entry.exists():  # evicted while it was read: a plain miss
                return None
            warnings.warn(f"feature cache: {entry} is damaged ({exc}); ignored and removed, the features are "
                          "fitted again", FeatureCacheWarning, stacklevel=2)
            self._discard(entry)
            return None
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            if entry.exists():  # (an entry evicted meanwhile is a plain miss)
                warnings.warn(f"feature cache: {entry} cannot be read ({exc}); the features are fitted again",
                              FeatureCacheWarning, stacklevel=2)
            return None
        self._touch(entry)
        return loaded

    def _copy_checked(self, entry: Path, dest: Path) -> None:
        """Copy the entry's state files into ``dest``, checking each against entry.json."""
        try:
            record = read_json(entry / ENTRY)
            expected = record["files"]
            if not isinstance(expected, dict) or not expected:
                raise DamagedEntry("entry.json lists no files")
        except ValueError as exc:
            raise DamagedEntry(str(exc)) from None
        except (KeyError, TypeError):
            raise DamagedEntry("entry.json has no file list") from None
        state = entry / STATE_DIR
        present = {p.relative_to(state).as_posix() for p in _files(state)} if state.is_dir() else set()
        if present != set(expected):
            missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
            raise DamagedEntry(f"files missing {missing} / not listed {extra}")
        for rel, want in expected.items():
            if ".." in Path(rel).parts or Path(rel).is_absolute() or not isinstance(want, dict):
                raise DamagedEntry(f"file entry {rel!r}")
            if _copy_hashed(state / rel, dest / rel) != (want.get("size"), want.get("sha256")):
                raise DamagedEntry(f"{rel} differs from what entry.json records")

    @staticmethod
    def _touch(entry: Path) -> None:
        with contextlib.suppress(OSError):
            (entry / USED).touch()
            os.utime(entry / USED)

    # ----------------------------------------------------------------- write

    def store(self, key: str, source: Path, about: dict | None = None) -> bool:
        """Store the fitted state in folder ``source`` under ``key`` (whole, by rename), then
        evict least-recently-used entries beyond the bound. False when not stored."""
        entry = self.entry_dir(key)
        if (entry / ENTRY).is_file():
            self._touch(entry)
            return True
        files = _files(source)
        size = sum(f.stat().st_size for f in files)
        if size > self.max_bytes:
            warnings.warn(f"feature cache: a {size / 1e9:.2f} GB state is larger than the cache bound "
                          f"({self.max_bytes / 1e9:g} GB); not stored", FeatureCacheWarning, stacklevel=2)
            return False
        self._prepare()
        try:
            with atomic_dir(entry, replace=False) as tmp:
                listed = {}
                for f in files:
                    rel = f.relative_to(source).as_posix()
                    size, digest = _copy_hashed(f, tmp / STATE_DIR / rel)
                    listed[rel] = {"size": size, "sha256": digest}
                write_json(tmp / ENTRY, {"key": key, **(about or {}), "versions": _versions(),
                                         "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": listed})
                (tmp / USED).touch()
        except FileExistsError:
            if not (entry / ENTRY).is_file():
                raise
            # another writer stored it first: theirs is kept
        self.evict(keep=key)
        return True

    # ----------------------------------------------------------------- size

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every complete entry, least recently used first."""
        out = []
        if not self.entries_dir.is_dir():
            return out
        for entry in self.entries_dir.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                used = (entry / USED).stat().st_mtime if (entry / USED).exists() else entry.stat().st_mtime
                size = sum(f.stat().st_size for f in _files(entry))
            except OSError:  # removed meanwhile
                continue
            out.append((used, size, entry))
        return sorted(out, key=lambda e: (e[0], e[2].name))

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least-recently-used entries until the cache fits its bound (``keep``
        last of all); also the leftovers of crashed writers. Returns the removed keys."""
        self._clean_leftovers()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        entries.sort(key=lambda e: e[2].name == keep)  # stable: LRU order, ``keep`` last
        removed = []
        for _, size, entry in entries:
            if total <= self.max_bytes:
                break
            if self._discard(entry):
                removed.append(entry.name)
            total -= size
        return removed

    def _discard(self, entry: Path) -> bool:
        """Rename ``entry`` away (readers then miss it whole), then delete it."""
        trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(entry, trash)
        except OSError:  # gone already (another process evicted it)
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _clean_leftovers(self) -> None:
        if not self.entries_dir.is_dir():
            return
        now = time.time()
        for p in self.entries_dir.iterdir():
            with contextlib.suppress(OSError):
                # any other dot-name is a writer's temporary (atomic_dir's ".<key>.<random>";
                # ".tmp-..." of earlier versions): stale ones are crashed writers'
                if p.name.startswith(".trash-") or (p.name.startswith(".")
                                                    and now - p.stat().st_mtime > _STALE_TMP_S):
                    shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- a stage-seed's use


@dataclass(frozen=True)
class StageCache:
    """The cache as one stage-seed's ``features`` node uses it."""

    cache: FeatureCache
    key: str  # the cache key
    stage_key: str  # the run's content key (features_key.json "key")
    about: dict

    def restore(self, stage_dir: Path, load: Callable[[Path], object]):
        """The stage-seed's features from the cache, recorded in features_key.json; None on a miss."""
        from moakit import feature_reuse
        from moakit.runs import layout

        features = self.cache.restore(self.key, Path(stage_dir) / layout.FEATURES_DIR, load)
        if features is not None:
            feature_reuse.record_key(stage_dir, self.stage_key, source="cache", cache_key=self.key,
                                     cache=str(self.cache.root))
        return features

    def store(self, stage_dir: Path) -> None:
        """Store the stage-seed's fitted features; record that its fit was stored."""
        from moakit import feature_reuse
        from moakit.runs import layout

        try:
            stored = self.cache.store(self.key, Path(stage_dir) / layout.FEATURES_DIR, self.about)
        except OSError as exc:  # a full or read-only cache folder: the run goes on without it
            warnings.warn(f"feature cache: cannot store in {self.cache.root} ({exc})", FeatureCacheWarning,
                          stacklevel=2)
            stored = False
        if stored:
            feature_reuse.record_key(stage_dir, self.stage_key, source="fit", cache_key=self.key,
                                     cache=str(self.cache.root))


def for_stage(conf: dict | None, model, chain, index: int, seed: int, data,
              inputs: tuple[np.ndarray | None, ...]) -> StageCache | None:
    """The cache for stage ``index`` / ``seed`` (``inputs``: its meta blocks, train and test),
    or None: no cache configured, reuse switched off, or features with no content key."""
    from moakit import feature_reuse

    if not conf or not feature_reuse.enabled():
        return None
    stage = chain.stages[index]
    if not feature_reuse.shares(model, stage):
        return None
    skey = feature_reuse.stage_key(model, chain, index, seed, data)
    about = {"model": model.name, "stage": stage.name, "stage_key": skey}
    return StageCache(FeatureCache.from_settings(conf), cache_key(skey, inputs), skey, about)
