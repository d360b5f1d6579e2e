"""`pretrained: true` in a DeepInsight config: timm's weights through the Hugging Face hub
cache, offline (HF_HUB_OFFLINE=1, HF_HOME a temporary folder populated here in the hub's
cache layout with weights saved from a randomly initialised tiny timm model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

REPO = "timm/test_efficientnet.r160_in1k"  # timm's tiny test model and its hub repository
COMMIT = "0123456789abcdef0123456789abcdef01234567"

CHILD = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import load_file
    from moakit.models.deepinsight_cnn import DeepInsightParams, build_cnn

    saved = load_file(sys.argv[1])
    params = DeepInsightParams(backbone="test_efficientnet", pretrained=True, image_size=16)
    net, kwargs, loaded = build_cnn(params, n_targets=5)
    own = net.backbone.state_dict()
    same = all(torch.equal(own[k], saved[k]) for k in own if k in saved)
    out = {"loaded": loaded, "same": same, "compared": sum(k in saved for k in own), "kwargs": kwargs}
    try:  # not cached: one clear error
        build_cnn(DeepInsightParams(backbone="test_resnet", pretrained=True, image_size=16), n_targets=5)
    except Exception as exc:
        out["missing"] = [type(exc).__name__, str(exc)]
    try:  # a backbone timm has no hub weights for
        build_cnn(DeepInsightParams(backbone="resnest50d_fast_2s2x40d", pretrained=True, image_size=16), 5)
    except Exception as exc:
        out["custom"] = [type(exc).__name__, str(exc)]
    print(json.dumps(out))
""")


def _populate_cache(hf_home, seed: int = 0):
    """A hub cache holding REPO's model.safetensors: a random tiny model's weights."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False)  # with its classifier, as on the hub
    with torch.no_grad():
        for p in model.parameters():  # not timm's init: the test sees these values, not a fresh model's
            p.add_(torch.randn_like(p) * 0.1)
    repo_dir = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    path = snapshot / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_pretrained_true_loads_from_the_hub_cache_offline(tmp_path):
    hf_home = tmp_path / "hf"
    weights = _populate_cache(hf_home)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(weights)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"]["source"] == "hub" and out["loaded"]["repo"] == REPO and out["loaded"]["offline"]
    assert out["compared"] > 10 and out["same"], "the backbone holds the cached weights"
    assert out["kwargs"]["backbone"] == "test_efficientnet"  # a saved run rebuilds it without the hub
    kind, message = out["missing"]
    assert kind == "HubWeightsError"
    for part in ("'test_resnet'", "timm/test_resnet.r160_in1k", "HF_HUB_OFFLINE", str(hf_home / "hub"),
                 "pretrained_weights: FILE", "hf download"):
        assert part in message, (part, message)
    kind, message = out["custom"]
    assert kind == "HubWeightsError" and "resnest50d_fast_2s2x40d" in message and "pretrained_weights" in message


def test_pretrained_and_a_weights_file_together_are_refused():
    from pydantic import ValidationError

    from moakit.models.deepinsight_cnn import DeepInsightParams

    with pytest.raises(ValidationError, match="not both"):
        DeepInsightParams(backbone="test_efficientnet", pretrained=True, pretrained_weights="w.pth")
