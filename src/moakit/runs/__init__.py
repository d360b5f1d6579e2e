"""The run folder as code: its layout (:mod:`moakit.runs.layout`, with :func:`kind_of`),
typed records of its JSON files and one reader / writer of its prediction files
(:mod:`moakit.runs.records`), and :func:`open_run` returning a :class:`ModelRun`,
:class:`WorkflowRun` or :class:`BlendRun` (:mod:`moakit.runs.run`).

Only ``layout`` is imported eagerly (it needs nothing but the standard library, so the CLI
stays quick to start); the rest on first use.
"""

from moakit.runs import layout
from moakit.runs.layout import Kind, kind_of

_LAZY = {"RunFileError": "records", "BlendRun": "run", "ModelRun": "run", "Run": "run", "WorkflowRun": "run",
         "check_resume": "run", "open_run": "run", "resume_identity": "run"}

__all__ = ["BlendRun", "Kind", "ModelRun", "Run", "RunFileError", "WorkflowRun", "check_resume", "kind_of", "layout",
           "open_run", "resume_identity"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"moakit.runs.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'moakit.runs' has no attribute {name!r}")
