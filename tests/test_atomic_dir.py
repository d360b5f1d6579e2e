"""moakit.artifacts.atomic_dir with several writers of one target: every writer has its own
temporary and backup names, all succeed, the target is one writer's complete folder and
nothing else is left beside it."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from moakit.artifacts import atomic_dir

N_FILES = 12


def _write(target: Path, writer: str, before_rename=None) -> str:
    """One writer's folder: N_FILES files (one nested) that all name the writer."""
    with atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        for i in range(N_FILES):
            (tmp / ("sub" if i == 0 else ".") / f"f{i}.txt").write_text(f"{writer}\n" * 200)
        if before_rename is not None:
            before_rename()
    return writer


def _one_writer(target: Path) -> str:
    """The writer whose complete folder ``target`` is (fails when it mixes writers or lacks files)."""
    files = sorted(p for p in target.rglob("*") if p.is_file())
    assert len(files) == N_FILES
    owners = {p.read_text() for p in files}
    assert len(owners) == 1, owners
    return owners.pop().splitlines()[0]


def _process_writer(args) -> str:
    target, writer, start_at = args
    return _write(Path(target), writer, lambda: time.sleep(max(0.0, start_at - time.time())))


def test_concurrent_processes_all_succeed_one_complete_folder(tmp_path):
    target = tmp_path / "out" / "folder"
    _write(target, "before")  # the replace path: a target already there
    start_at = time.time() + 2.0  # every writer renames at about the same moment
    writers = [f"p{i}" for i in range(4)]
    with ProcessPoolExecutor(4) as pool:
        done = list(pool.map(_process_writer, [(str(target), w, start_at) for w in writers]))
    assert done == writers
    assert _one_writer(target) in writers
    assert [p.name for p in target.parent.iterdir()] == ["folder"]  # no temporary or backup left


def test_concurrent_threads_rounds(tmp_path):
    target = tmp_path / "folder"
    n = 6
    for round_ in range(4):
        barrier = threading.Barrier(n)
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(_write, target, f"r{round_}t{i}", barrier.wait) for i in range(n)]
            done = [f.result() for f in futures]
        assert len(done) == n
        assert _one_writer(target).startswith(f"r{round_}t")
        assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_first_writer_wins_without_replace(tmp_path):
    target = tmp_path / "entry"
    n = 5
    barrier = threading.Barrier(n)

    def write(i: int):
        try:
            with atomic_dir(target, replace=False) as tmp:
                (tmp / "who.txt").write_text(str(i))
                barrier.wait()
            return "stored"
        except FileExistsError:
            return "kept theirs"

    with ThreadPoolExecutor(n) as pool:
        outcome = list(pool.map(write, range(n)))
    assert outcome.count("stored") == 1 and outcome.count("kept theirs") == n - 1
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    first = (target / "who.txt").read_text()
    with pytest.raises(FileExistsError, match="written by another writer first"):
        with atomic_dir(target, replace=False) as tmp:
            (tmp / "who.txt").write_text("late")
    assert (target / "who.txt").read_text() == first
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_failed_writer_leaves_the_target_and_nothing_else(tmp_path):
    target = tmp_path / "folder"
    _write(target, "kept")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert _one_writer(target) == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_replaces_a_file_and_an_empty_folder(tmp_path):
    for name, make in (("a_file", lambda p: p.write_text("old")), ("empty", os.mkdir)):
        target = tmp_path / name
        make(target)
        _write(target, name)
        assert _one_writer(target) == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty"]
