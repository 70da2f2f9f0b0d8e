"""Name -> constructor registries, so configs hold strings instead of live objects."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from rsec.checks import check_choice

T = TypeVar("T")


class Registry(Generic[T]):
  """A small named registry (as big_vision's): `@reg.register('name')` then `reg.get('name')`."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def deco(obj: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._items[name] = obj
      return obj
    return deco

  def get(self, name: str) -> T:
    check_choice(f"{self.kind} name", name, self._items)
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
