"""moakit: mechanism-of-action prediction from cell profiles (the 1st-place lish-moa solution).

The Python API (scikit-learn conventions) is imported on first use, so ``import moakit``
stays light and changes nothing global::

    import moakit
    moakit.list_models(); moakit.list_configs()
    data = moakit.simulate(n_rows=2000)
    model = moakit.MoAModel("simple_nn", profile="cpu").fit(data.X, data.Y)
    model.predict_proba(data.X_test)
"""

from moakit._version import __version__

_API = ("MoADataset", "MoAModel", "MoABlend", "list_models", "list_configs", "list_networks", "list_feature_steps",
        "list_backbones", "list_executors", "load_dataset", "simulate")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from moakit import api

        return getattr(api, name)
    raise AttributeError(f"module 'moakit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
