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
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

import yaml
from pydantic import ValidationError

from .contracts import check_critic, check_environment
from .errors import ConfigError, PluginError, UserError, validation_problems

T = TypeVar("T")


@dataclass(frozen=True)
class PluginSpec:
    """How a plug-in was built: its registered name and the keyword arguments it got (None:
    unknown, e.g. an object built in Python and handed over)."""

    name: str
    args: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "a run record") -> PluginSpec:
        name, args = data.get("name"), data.get("args")
        if not isinstance(name, str) or not (args is None or isinstance(args, dict)):
            raise ConfigError(f"{where}: a plug-in spec is {{name: str, args: mapping}}, got "
                              f"{dict(data)!r}")
        return cls(name, args)


class Registry(Generic[T]):
    """Factories of one kind of plug-in, by name."""

    def __init__(self, kind: str, group: str,
                 check: Callable[[Any], Any] | None = None) -> None:
        self.kind = kind
        self.group = group
        self.check = check  # the contract every built plug-in is checked against
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

    def factory(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (an entry point is imported now)."""
        self._find_entry_points()
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}.{hint} Available: "
                              f"{', '.join(sorted(self._factories)) or 'none'}; packages add "
                              f"their own through the {self.group!r} entry-point group.")
        factory = self._factories[name]
        if isinstance(factory, EntryPoint):  # imported only when first used
            try:
                factory = self._factories[name] = factory.load()
            except Exception as err:  # name the broken plug-in, not just the import error
                raise PluginError(f"{self.kind} plug-in {name!r} ({factory.value}) from group "
                                  f"{self.group!r} failed to load: {type(err).__name__}: "
                                  f"{err}") from err
        return factory

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the plug-in ``name`` with ``kwargs`` and check it against its contract.
        Unknown names list what exists; arguments the factory does not take are refused with
        its signature, before it runs."""
        factory = self.factory(name)
        label = f"{self.kind} {name!r}"
        check_arguments(factory, kwargs, label)
        try:
            built = factory(**kwargs)
        except UserError:
            raise
        except ValidationError as err:  # the plug-in's own settings model refused them
            raise ConfigError(f"{label}: invalid arguments ({validation_problems(err)})"
                              ) from err
        except (ValueError, OSError) as err:  # a missing file, a bad value
            raise ConfigError(f"{label}: {err}") from err
        if self.check is not None:
            self.check(built)
        return built

    def parse_args(self, name: str, raw: Mapping[str, str]) -> dict[str, Any]:
        """``KEY=VALUE`` texts (``--env-arg``) as the factory's arguments: a parameter
        annotated as a string keeps its text as written; others are read as YAML scalars
        (``50``, ``true``, ``[3, 4]``), text when YAML cannot read them."""
        hints = _type_hints(self.factory(name))
        return {key: text if _wants_text(hints.get(key)) else parse_value(text)
                for key, text in raw.items()}

    def _find_entry_points(self) -> None:
        if self._entry_points_found:
            return
        self._entry_points_found = True
        for point in entry_points(group=self.group):
            # a name registered in code wins; the package can pick another
            self._factories.setdefault(point.name, point)


def check_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any], label: str) -> None:
    """Refuse arguments ``factory`` cannot take, naming ``label`` and its signature."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins: let the call speak
        return
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{label} does not take these arguments ({err}); it takes "
                          f"{_public(signature)}") from None


def _public(signature: inspect.Signature) -> str:
    names = [p.name for p in signature.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return ", ".join(names) or "no arguments"


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: a YAML scalar or flow list (``50``, ``0.5``, ``true``,
    ``[3, 4]``); anything else — a mapping such as ``{problem}``, text YAML cannot read
    such as ``%%`` — stays the text as written."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    unreadable = isinstance(value, (dict, set)) or (
        value is None and text.strip() not in ("", "null", "Null", "NULL", "~"))
    return text if unreadable else value


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: read the raw ones
        return dict(getattr(target, "__annotations__", {}))


def _wants_text(annotation: Any) -> bool:
    """Whether a parameter annotated ``annotation`` takes text (``str``, ``str | None``,
    ``str | Path``), not a number or a list."""
    if isinstance(annotation, str):
        return annotation.replace(" ", "") in ("str", "str|None", "None|str", "Optional[str]",
                                               "str|Path", "Path|str")
    args = typing.get_args(annotation) if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else ()
    return annotation is str or (str in args and not set(args) & {int, float, bool, list, tuple})


environments: Registry[Any] = Registry("environment", "mcts_agent.environments",
                                       check=check_environment)
critics: Registry[Any] = Registry("critic", "mcts_agent.critics",
                                  check=lambda critic: check_critic(critic))
