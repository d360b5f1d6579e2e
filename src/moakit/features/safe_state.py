"""Fitted states saved as data, never code: a JSON tree plus numeric arrays (``.npz``).

A run folder may come from someone else, so nothing in it is unpickled. A fitted state
(e.g. a fitted sklearn transformer) is written as

* a JSON tree: None, bool, int, float, str and lists as themselves; every other value as
  a tagged JSON object (``{"$": "tuple" | "dict" | "array" | "sparse" | "object" ...}``);
* its numeric arrays in one ``.npz`` file, read back with ``allow_pickle=False``.

Objects are rebuilt only for classes on an explicit trusted list given by the code that
loads them (a feature step's :meth:`moakit.features.steps.Step.state_types`), never for a
class named by the file alone: the class is looked up by name among the trusted ones,
created with ``cls.__new__`` and given its saved ``__getstate__`` dict back (through the
class's ``__setstate__`` when it has one), as unpickling would do, minus the code. The
values inside are again only JSON, arrays, scipy sparse matrices, numpy random states,
numpy scalar types, other trusted objects, and functions: numba-compiled functions and
numpy ufuncs of trusted modules, looked up by name. Anything else fails when saving,
naming the attribute, so a new step kind with an unsupported state is caught by its
save/reload test.

The trusted lists used by moakit's steps: sklearn's QuantileTransformer, StandardScaler,
PCA, FactorAnalysis, KMeans and VarianceThreshold; umap-learn's UMAP with pynndescent's
NNDescent (its search index), numpy's RandomState and the distance functions of
``umap.distances`` / ``pynndescent.distances`` (plus numpy ufuncs).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class StateError(ValueError):
    """A saved state that cannot be written or read safely (the message names the file)."""


@dataclass(frozen=True)
class Trusted:
    """What a state may hold besides plain data.

    ``types``: classes rebuilt from their saved ``__getstate__`` dict; ``modules``: modules
    whose numba-compiled functions and numpy ufuncs may be referred to by name; ``skip``:
    per class, attributes not saved because the class's ``__setstate__`` rebuilds them.
    """

    types: tuple[type, ...] = ()
    modules: tuple[str, ...] = ()
    skip: Mapping[type, tuple[str, ...]] = field(default_factory=dict)

    def __add__(self, other: "Trusted") -> "Trusted":
        return Trusted(tuple(dict.fromkeys(self.types + other.types)),
                       tuple(dict.fromkeys(self.modules + other.modules)), {**self.skip, **other.skip})

    def type_named(self, name: str) -> type | None:
        return next((t for t in self.types if type_name(t) == name), None)


def type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_function(obj: Any) -> bool:
    if isinstance(obj, np.ufunc):
        return True
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return False
    return isinstance(obj, Dispatcher)


_SPARSE_FORMATS = ("csr", "csc")


# --------------------------------------------------------------------------- encode


class _Encoder:
    def __init__(self, trusted: Trusted, arrays: dict[str, np.ndarray], prefix: str) -> None:
        self.trusted, self.arrays, self.prefix = trusted, arrays, prefix

    def array(self, a: np.ndarray, where: str) -> dict:
        if a.dtype.hasobject:
            raise StateError(f"{where}: an array of Python objects cannot be saved safely")
        key = f"{self.prefix}{len(self.arrays)}"
        self.arrays[key] = a
        return {"$": "array", "key": key}

    def encode(self, obj: Any, where: str) -> Any:
        t = type(obj)
        if obj is None or t in (bool, int, str):
            return obj
        if t is float:
            return obj if math.isfinite(obj) else {"$": "float", "value": repr(obj)}
        if t is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if t is tuple:
            return {"$": "tuple", "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if t is dict:
            if all(type(k) is str for k in obj):
                return {"$": "dict", "items": {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}}
            return {"$": "dict", "pairs": [[self.encode(k, f"{where}<key>"), self.encode(v, f"{where}[{k!r}]")]
                                           for k, v in obj.items()]}
        if t is np.ndarray:
            return self.array(obj, where)
        if isinstance(obj, np.generic):
            return {"$": "scalar", "array": self.array(np.asarray(obj), where)}
        if isinstance(obj, np.dtype):
            if obj.hasobject:
                raise StateError(f"{where}: an object dtype cannot be saved safely")
            return {"$": "dtype", "str": obj.str}
        if isinstance(obj, type) and issubclass(obj, np.generic) and obj is not np.object_:
            return {"$": "nptype", "name": np.dtype(obj).name}
        if isinstance(obj, np.random.RandomState):
            return {"$": "random_state", "state": self.encode(obj.get_state(legacy=True), f"{where}.state")}
        if _is_function(obj):
            return self.function(obj, where)
        import scipy.sparse as sp

        if sp.issparse(obj):
            if obj.format not in _SPARSE_FORMATS:
                raise StateError(f"{where}: sparse format {obj.format!r} cannot be saved (csr or csc only)")
            return {"$": "sparse", "format": obj.format, "class": "matrix" if sp.isspmatrix(obj) else "array",
                    "shape": list(obj.shape), "data": self.array(obj.data, where),
                    "indices": self.array(obj.indices, where), "indptr": self.array(obj.indptr, where)}
        if t in self.trusted.types:
            state = obj.__getstate__()
            if not isinstance(state, dict):
                raise StateError(f"{where}: {type_name(t)} has no attribute dict to save")
            skip = self.trusted.skip.get(t, ())
            state = {k: v for k, v in state.items() if k not in skip}
            return {"$": "object", "type": type_name(t), "state": self.encode(state, where)}
        raise StateError(f"{where}: a {type_name(t)} cannot be saved safely (not on the trusted list "
                         f"{[type_name(c) for c in self.trusted.types]})")

    def function(self, fn: Any, where: str) -> dict:
        module = "numpy" if isinstance(fn, np.ufunc) else getattr(fn, "__module__", None)
        name = getattr(fn, "__name__", None)
        found = None
        if module in self.trusted.modules and name:
            found = getattr(importlib.import_module(module), name, None)
        if found is not fn:
            raise StateError(f"{where}: function {module}.{name} cannot be saved (only the compiled functions "
                             f"of {list(self.trusted.modules)} are referred to by name)")
        return {"$": "function", "module": module, "name": name}


# --------------------------------------------------------------------------- decode


class _Decoder:
    def __init__(self, trusted: Trusted, arrays: Mapping[str, np.ndarray], where: str) -> None:
        self.trusted, self.arrays, self.where = trusted, arrays, where

    def fail(self, message: str) -> StateError:
        return StateError(f"{self.where}: {message}")

    def array(self, node: Any) -> np.ndarray:
        if not isinstance(node, dict) or node.get("$") != "array" or node.get("key") not in self.arrays:
            raise self.fail(f"array reference {str(node)[:80]} names no saved array")
        return self.arrays[node["key"]]

    def decode(self, node: Any) -> Any:
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v) for v in node]
        if type(node) is not dict or not isinstance(node.get("$"), str):
            raise self.fail(f"unexpected value {str(node)[:80]}")
        tag = node["$"]
        handler = getattr(self, f"_decode_{tag}", None) if tag.isidentifier() else None
        if handler is None:
            raise self.fail(f"unknown entry kind {tag!r}")
        try:
            return handler(node)
        except StateError:
            raise
        except Exception as exc:  # malformed: never more than an error naming the file
            raise self.fail(f"malformed {tag!r} entry ({type(exc).__name__}: {exc})") from None

    def _decode_float(self, node):
        value = float(node["value"])
        if math.isfinite(value):
            raise ValueError("a finite float is stored as a number")
        return value

    def _decode_tuple(self, node):
        return tuple(self.decode(v) for v in node["items"])

    def _decode_dict(self, node):
        if "items" in node:
            return {str(k): self.decode(v) for k, v in node["items"].items()}
        return {self.decode(k): self.decode(v) for k, v in node["pairs"]}

    def _decode_array(self, node):
        return self.array(node)

    def _decode_scalar(self, node):
        a = self.array(node["array"])
        if a.ndim != 0:
            raise ValueError("a scalar must be a 0-d array")
        return a[()]

    def _decode_dtype(self, node):
        dt = np.dtype(str(node["str"]))
        if dt.hasobject:
            raise ValueError("object dtype")
        return dt

    def _decode_nptype(self, node):
        dt = np.dtype(str(node["name"]))
        if dt.hasobject:
            raise ValueError("object dtype")
        return dt.type

    def _decode_random_state(self, node):
        rs = np.random.RandomState()
        rs.set_state(self.decode(node["state"]))
        return rs

    def _decode_function(self, node):
        module, name = node["module"], node["name"]
        if module not in self.trusted.modules or not isinstance(name, str) or not name.isidentifier():
            raise self.fail(f"function {module}.{name} is not among the trusted {list(self.trusted.modules)}")
        fn = getattr(importlib.import_module(module), name, None)
        if fn is None or not _is_function(fn):
            raise self.fail(f"{module}.{name} is not a compiled function")
        return fn

    def _decode_sparse(self, node):
        import scipy.sparse as sp

        fmt, kind = node["format"], node["class"]
        if fmt not in _SPARSE_FORMATS or kind not in ("matrix", "array"):
            raise ValueError(f"sparse {fmt} {kind}")
        cls = getattr(sp, f"{fmt}_{kind}")
        data, indices, indptr = (self.array(node[k]) for k in ("data", "indices", "indptr"))
        m = cls((data, indices, indptr), shape=tuple(int(n) for n in node["shape"]))
        m.data, m.indices, m.indptr = data, indices, indptr  # the saved dtypes, as they were
        return m

    def _decode_object(self, node):
        cls = self.trusted.type_named(str(node["type"]))
        if cls is None:
            raise self.fail(f"{node['type']} is not on the trusted list "
                            f"{[type_name(c) for c in self.trusted.types]}")
        state = self.decode(node["state"])
        if type(state) is not dict:
            raise ValueError("an object's state must be a dict")
        obj = cls.__new__(cls)
        setstate = getattr(obj, "__setstate__", None)
        if setstate is not None:
            setstate(state)
        else:
            obj.__dict__.update(state)
        return obj


# --------------------------------------------------------------------------- public


def encode(obj: Any, trusted: Trusted, arrays: dict[str, np.ndarray], prefix: str = "a", where: str = "state") -> Any:
    """The JSON tree of ``obj``; its arrays are added to ``arrays`` under keys ``prefix<n>``."""
    return _Encoder(trusted, arrays, prefix).encode(obj, where)


def decode(node: Any, trusted: Trusted, arrays: Mapping[str, np.ndarray], where: str = "state") -> Any:
    """Rebuild what :func:`encode` wrote (raises StateError naming ``where``)."""
    return _Decoder(trusted, arrays, where).decode(node)


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` of plain numeric arrays (``path`` must end in .npz)."""
    with open(path, "wb") as fh:  # a handle: numpy must not append another suffix
        np.savez(fh, **arrays)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` written by :func:`write_arrays`, read without pickle."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise StateError(f"{path}: missing") from None
    except Exception as exc:  # a damaged or crafted file: never more than an error
        raise StateError(f"{path}: not a readable array archive ({type(exc).__name__}: {exc})") from None
