"""`Registry`: the one way convnet keeps named things (activations, initializers, losses, metrics,
optimizers, schedules, layers, model presets, datasets, explanation methods, experiments).

Every registry lists its names with a shell-style pattern, as `timm.list_models("resnet*")`, and
refuses an unknown name with the closest matches and the full list, so each `get`/`list_*` of the
package is a thin wrapper around one of these.

    >>> colours = Registry("colour")
    >>> colours.register("red", 0xFF0000)
    16711680
    >>> colours.names("r*")
    ['red']
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'rde'. Did you mean 'red'? Available: red.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from convnet._internal.checks import check_str, unknown_name

T = TypeVar("T")


def _lower(name: str) -> str:
    return name.lower()


class Registry(Generic[T]):
    """Named items of one kind.

    Args:
        kind: what the items are, for messages ("activation", "dataset").
        normalise: how a name is compared: lower-case by default (Keras names are case-insensitive);
            datasets also read "fashion_mnist" as "fashion-mnist".
    """

    def __init__(self, kind: str, normalise: Callable[[str], str] = _lower):
        self.kind = kind
        self._normalise = normalise
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name: str, item: T | None = None) -> T | Callable[[T], T]:
        """Add `item` under `name` and return it; without `item`, a decorator that registers what it decorates.

        Raises:
            ValueError: `name` is taken (registries never overwrite silently).
        """
        key = self._normalise(check_str("name", name))

        def add(value: T) -> T:
            if key in self._items:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._items[key] = value
            return value

        return add if item is None else add(item)

    def replace(self, name: str, item: T) -> T:
        """Put `item` in place of the one registered as `name` (which must exist); returns it."""
        key = self._normalise(check_str("name", name))
        if key not in self._items:
            raise unknown_name(self.kind, name, self._items)
        self._items[key] = item
        return item

    def get(self, name: object, argument: str | None = None) -> T:
        """The item called `name`; `argument` names the caller's argument in the error.

        Raises:
            TypeError: `name` is not a string.
            ValueError: no such name; the message suggests the closest and lists all.
        """
        key = self._normalise(check_str(argument or "name", name))
        if key not in self._items:
            raise unknown_name(self.kind, name, self._items, argument=argument)
        return self._items[key]

    def names(self, pattern: str = "*") -> list[str]:
        """The registered names matching a shell-style `pattern` ("res*", "*mnist"), sorted."""
        pattern = check_str("pattern", pattern)
        return sorted(fnmatch.filter(self._items, self._normalise(pattern)))

    def name_of(self, item: T) -> str | None:
        """The name `item` is registered under (by identity), or None."""
        return next((name for name, value in self._items.items() if value is item), None)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalise(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} names)"
