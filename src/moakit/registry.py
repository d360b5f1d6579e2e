"""Named registries: models, networks, feature steps, CNN backbones, executors.

Every pluggable kind of object in moakit is found by name through one :class:`Registry`,
so they all share one set of rules:

* ``@REG.register("name")`` (or ``REG.add("name", obj)``) makes ``obj`` available;
  registering another object under a taken name raises ``ValueError`` naming both (the
  same object again, or a reloaded module's new copy of it, is accepted);
* ``REG.get("name")`` returns it, or raises ``ValueError("unknown <kind> 'name'; known:
  a, b, c")``;
* ``REG.names()`` lists the names, sorted.

A registry reads like a mapping (``name in REG``, ``REG[name]``, ``sorted(REG)``). A
``loader`` (called once, on the first lookup of a name not yet registered) imports the modules whose decorators fill
it, so a lookup never depends on what the caller happened to import before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def _qualified(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class Registry(Generic[T]):
    """Name -> object, for one ``kind`` of object (used in error messages)."""

    def __init__(self, kind: str, loader: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loader = loader
        self._loading = False

    # ------------------------------------------------------------------ registering
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; returns ``obj``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        old = self._items.get(name)
        if old is not None and old is not obj and _qualified(old) != _qualified(obj):
            raise ValueError(f"{self.kind} name {name!r} registered twice ({_qualified(old)} and {_qualified(obj)})")
        self._items[name] = obj
        return obj

    def register(self, name: str | None = None, *, attr: str | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``, or under its attribute
        ``attr`` (e.g. a model class's ``name``) when ``name`` is None."""
        if name is None and attr is None:
            raise TypeError("register() needs a name or attr")

        def deco(obj: T) -> T:
            return self.add(name if name is not None else getattr(obj, attr, None), obj)

        return deco

    # ------------------------------------------------------------------ looking up
    def _load(self) -> None:
        if self._loader is not None and not self._loading:
            self._loading = True  # the loader's imports register into this registry
            try:
                self._loader()
                self._loader = None  # a failed import is retried (and fails loudly) next time
            finally:
                self._loading = False

    def get(self, name: str) -> T:
        """The object registered as ``name``; a ValueError naming the known ones if none."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __getitem__(self, name: str) -> T:
        if name not in self._items:  # the loader runs only when a name is missing
            self._load()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"
