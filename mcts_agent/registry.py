"""Name → factory registries for environments and critics, open to other packages.

Built-in plug-ins register with a decorator; a third-party package adds its own without
touching this repository by declaring an entry point, e.g. in its ``pyproject.toml``::

    [project.entry-points."mcts_agent.environments"]
    my-env = "my_package.envs:MyEnvironment"

Entry points are listed on first use of a registry and a plug-in is imported only when it is
created, so importing mcts-agent stays cheap and one broken plug-in does not hide the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories of one kind of plug-in, by name."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[..., T] | EntryPoint] = {}
        self._entry_points_found = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@environments.register("arith")`` on a class or factory function."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        self._find_entry_points()
        return sorted(self._factories)

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the plug-in ``name`` with ``kwargs``; unknown names list what exists."""
        self._find_entry_points()
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Available: "
                           f"{', '.join(sorted(self._factories)) or 'none'}; packages add "
                           f"their own through the {self.group!r} entry-point group.")
        factory = self._factories[name]
        if isinstance(factory, EntryPoint):  # imported only when first used
            try:
                factory = self._factories[name] = factory.load()
            except Exception as err:  # name the broken plug-in, not just the import error
                raise ImportError(f"{self.kind} plug-in {name!r} ({factory.value}) from group "
                                  f"{self.group!r} failed to load: {err}") from err
        return factory(**kwargs)

    def _find_entry_points(self) -> None:
        if self._entry_points_found:
            return
        self._entry_points_found = True
        for point in entry_points(group=self.group):
            # a name registered in code wins; the package can pick another
            self._factories.setdefault(point.name, point)


environments: Registry[Any] = Registry("environment", "mcts_agent.environments")
critics: Registry[Any] = Registry("critic", "mcts_agent.critics")
