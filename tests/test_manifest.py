"""manifest.json: one schema for a model's run folder and a workflow's (issue: one way to do
each thing); older layouts are refused with one clear error (unsupported format, retrain)."""

from __future__ import annotations

import json

import pytest

import moakit
from moakit.manifest import Manifest, new_manifest, read_manifest

LEGACY_MODEL = {  # what `moakit train` wrote before the shared schema
    "moakit_version": "0.1.0", "python": "3.11.7", "torch": "2.14.1", "numpy": "2.4.6", "scikit_learn": "1.9.1",
    "model": "simple_nn", "profile": "cpu", "data_fingerprint": "e041b18524288149", "data_source": "data",
    "n_train": 100, "n_test": 20, "created": "2026-11-29T16:55:14", "status": "complete",
    "timings": {"stage_scored_seconds": 3.5, "total_seconds": 3.5, "node_seconds": 3.4}}
LEGACY_WORKFLOW = {  # what `moakit run` wrote before
    "kind": "workflow", "status": "failed", "versions": {"moakit": "0.1.0", "torch": "2.14.1"},
    "config_source": "blend_best_lb", "profile": "smoke", "config": {"blend_config": {}}, "data_fingerprint": "ab",
    "data_source": "/data", "n_train": 10, "n_test": 5, "executor": "LocalExecutor", "created": "x", "updated": "y",
    "models": {"simple_nn": {"status": "complete", "model": "simple_nn", "profile": "smoke", "run_dir": "models/simple_nn",
                             "seeds": [0], "folds": 3, "cv": "old", "seconds": 2.0, "log_loss": 0.02}},
    "blend": {"status": "complete", "weights": {"simple_nn": 1.0}}, "total_seconds": 12.5,
    "report_error": "OSError: disk full"}


def _write(folder, content):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(content))
    return folder


CURRENT_MODEL = {"schema_version": 1, "kind": "model", "versions": {"moakit": "0.1.0"}, "model": "simple_nn",
                 "profile": "cpu", "data_fingerprint": "e041b18524288149", "data_source": "data", "n_train": 100,
                 "n_test": 20, "status": "complete"}


def test_older_layouts_and_schema_versions_are_refused(tmp_path):
    for name, content in (("m", LEGACY_MODEL), ("w", LEGACY_WORKFLOW), ("v", {**CURRENT_MODEL, "schema_version": 2})):
        with pytest.raises(ValueError, match="unsupported format.*retrain") as info:
            read_manifest(_write(tmp_path / name, content))
        assert str(tmp_path / name / "manifest.json") in str(info.value)
    assert read_manifest(_write(tmp_path / "c", CURRENT_MODEL)).model == "simple_nn"


def test_written_manifest_round_trips(tmp_path):
    m = new_manifest("model", model="simple_nn", profile="smoke", data_fingerprint="f", data_source="d",
                     n_train=3, n_test=1)
    assert m.versions["moakit"] == moakit.__version__ and m.status == "running"
    m.write(tmp_path)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and raw["kind"] == "model" and raw["updated"]
    assert "error" not in raw and "models" in raw  # None fields are left out
    assert read_manifest(tmp_path) == Manifest(**raw)


@pytest.mark.parametrize("content,match", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a JSON object was expected"),
    (json.dumps({**CURRENT_MODEL, "status": "half-done"}), r"status"),
    (json.dumps({k: v for k, v in CURRENT_MODEL.items() if k != "n_train"}), r"n_train"),
    (json.dumps({**CURRENT_MODEL, "surprise": 1}), r"surprise"),
])
def test_a_damaged_manifest_is_named(tmp_path, content, match):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(ValueError, match="manifest.json: missing"):
        read_manifest(tmp_path)
