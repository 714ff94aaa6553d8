"""One registry type for everything users extend: backbones, heads and store backends.

Built-ins are registered in code; third-party packages add their own through an entry-point group
(``featcache.backbones``, ``featcache.heads``, ``featcache.stores``), loaded the first time the
registry is asked for something. So the CLI, ``predict``, ``export`` and every worker process see a
plugin without any code change. One rule everywhere: a duplicate name is an error unless the
caller asks to replace.

An entry point may name one item, a list of items, or a callable returning either::

    [project.entry-points."featcache.backbones"]
    my_net = "my_pkg.backbones:MY_NET_SPEC"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import FeatcacheError, RegistryError

T = TypeVar("T")


def import_object(reference: str):
    """'package.module:attr.sub' -> that object (the entry-point value syntax)."""
    module, _, attr = reference.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, is_item: Callable[[object], bool],
                 name_of: Callable[[T], str] = lambda item: item.name):
        self.kind = kind
        self.group = group
        self._is_item = is_item
        self._name_of = name_of
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, item: T, *, replace: bool = False, origin: str = "in-process registration") -> T:
        name = self._name_of(item)
        if name in self._items and self._items[name] is not item and not replace:
            raise RegistryError(f"{self.kind} {name!r} is already registered (by {self._origins[name]}); "
                                "pass replace=True to replace it")
        self._items[name] = item
        self._origins[name] = origin
        return item

    def expand(self, obj) -> list[T]:
        """An entry point's object -> the items it holds (item, list of items, or callable)."""
        if self._is_item(obj):
            return [obj]
        if isinstance(obj, list | tuple):
            return [x for o in obj for x in self.expand(o)]
        if isinstance(obj, dict):
            return self.expand(list(obj.values()))
        if callable(obj):
            return self.expand(obj())
        raise RegistryError(f"{obj!r} is not a {self.kind}, a list of them, or a callable returning them")

    def load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            where = f"entry point {ep.name} = {ep.value!r} of {ep.dist.name if ep.dist else 'an unknown package'}"
            try:
                items = self.expand(ep.load())
            except RegistryError:
                raise
            except Exception as exc:  # a broken plugin: say which one, whatever it raised
                raise RegistryError(f"cannot load {self.kind} plugin {where}: {type(exc).__name__}: {exc}") from exc
            for item in items:
                self.register(self.on_plugin(item, ep.value), origin=where)

    def on_plugin(self, item: T, reference: str) -> T:
        """Hook: what a registry records about an item that came from an entry point."""
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise FeatcacheError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items or (self.load_plugins() or name in self._items)

    def __iter__(self) -> Iterator[T]:
        self.load_plugins()
        return iter(list(self._items.values()))
