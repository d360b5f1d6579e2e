"""The one registry helper and the five registries built on it (models, networks, feature
steps, CNN backbones, executors), with their list_*() functions."""

from __future__ import annotations

import pytest

import moakit
from moakit.registry import Registry


class _A:
    name = "a"


class _B:
    name = "a"


def test_register_get_names_and_the_duplicate_rule():
    reg: Registry[type] = Registry("widget")
    assert reg.register(attr="name")(_A) is _A
    assert reg.add("z", _B) is _B
    assert reg.get("a") is _A and reg["z"] is _B
    assert reg.names() == ["a", "z"] and sorted(reg) == ["a", "z"] and len(reg) == 2
    assert "a" in reg and "nope" not in reg
    reg.add("a", _A)  # the same object again: accepted
    with pytest.raises(ValueError, match=r"widget name 'a' registered twice \(.*_A and .*_B\)"):
        reg.register(attr="name")(_B)
    assert reg.get("a") is _A  # the first registration is kept
    with pytest.raises(ValueError, match=r"^unknown widget 'b'; known: a, z$"):
        reg.get("b")
    with pytest.raises(KeyError):
        reg["b"]  # the mapping protocol keeps KeyError
    with pytest.raises(ValueError, match="non-empty string name"):
        reg.add("", _A)
    with pytest.raises(TypeError):
        reg.register()


def test_a_loader_runs_once_and_only_for_a_missing_name():
    calls = []
    reg: Registry[int] = Registry("thing", loader=lambda: calls.append(1) or reg.add("late", 2))
    reg.add("early", 1)
    assert reg.get("early") == 1 and calls == []  # present: nothing loaded
    assert reg.get("late") == 2 and calls == [1]
    assert reg.names() == ["early", "late"] and calls == [1]
    with pytest.raises(ValueError, match="known: early, late"):
        reg.get("nope")
    assert calls == [1]


def test_a_failing_loader_is_retried():
    state = {"fail": True}

    def loader():
        if state["fail"]:
            raise ImportError("broken module")
        reg.add("x", 1)

    reg: Registry[int] = Registry("thing", loader=loader)
    with pytest.raises(ImportError, match="broken module"):
        reg.names()
    state["fail"] = False
    assert reg.names() == ["x"]


def test_the_five_registries_and_their_list_functions():
    from moakit.features import STEP_KINDS
    from moakit.models import MODELS
    from moakit.models.deepinsight_cnn import CUSTOM_BACKBONES
    from moakit.nn.blocks import NETWORKS
    from moakit.runner import EXECUTORS

    for reg in (MODELS, NETWORKS, STEP_KINDS, CUSTOM_BACKBONES, EXECUTORS):
        assert isinstance(reg, Registry)
    assert {"simple_nn", "three_stage_nn", "two_stage_nn_tabnet", "resnet_2heads", "deepinsight_efficientnet",
            "deepinsight_resnest"} <= set(moakit.list_models())
    assert {"mlp", "resnet_2heads", "deepinsight_cnn"} <= set(moakit.list_networks())
    assert {"quantile", "pca", "umap", "variance_threshold", "kmeans_onehot"} <= set(moakit.list_feature_steps())
    assert moakit.list_backbones() == ["resnest50d_fast_2s2x40d"]
    assert moakit.list_executors() == ["local", "ray"]
    for fn in (moakit.list_models, moakit.list_networks, moakit.list_feature_steps, moakit.list_executors):
        assert fn() == sorted(fn())


def test_unknown_names_get_one_kind_of_error():
    from moakit.features.steps import step_class
    from moakit.models import get_model_class
    from moakit.models.deepinsight_cnn import create_backbone
    from moakit.nn.blocks import build_network
    from moakit.runner import make_executor

    with pytest.raises(ValueError, match=r"unknown model 'nope'; known: .*simple_nn"):
        get_model_class("nope")
    with pytest.raises(ValueError, match=r"unknown network 'nope'; known: .*mlp"):
        build_network("nope", {})
    with pytest.raises(ValueError, match=r"unknown feature step kind 'nope'; known: .*pca"):
        step_class("nope")
    with pytest.raises(ValueError, match=r"unknown executor 'nope'; known: local, ray"):
        make_executor("nope")
    with pytest.raises(ValueError, match=r"unknown backbone 'nope_net'.*resnest50d_fast_2s2x40d"):
        create_backbone("nope_net")


def test_a_second_model_under_a_taken_name_is_refused():
    from moakit.models import MODELS, register
    from moakit.models.simple_nn import SimpleNN

    assert MODELS.get("simple_nn") is SimpleNN
    impostor = type("SimpleNN", (SimpleNN,), {"__module__": "elsewhere"})
    with pytest.raises(ValueError, match="model name 'simple_nn' registered twice"):
        register(impostor)
    assert MODELS.get("simple_nn") is SimpleNN
