"""Critics from short specs, as the CLI (``--critic NAME[=ARG]``) and YAML configs name them.

A spec names any installed critic plug-in (``mcts-agent envs`` lists them), built through the
critic registry (:data:`mcts_agent.registry.critics`), optionally with one argument. The
built-in critics:

========================  ===============================================================
``rollout[=K]``           Monte Carlo rollouts with the search policy (K per node)
``verifier``              finished states: the reference answer (data mode); only failed
                          episodes, at 0 (inference mode); takes no argument
``reward-model=DIR``      a reward model saved by ``mcts-agent train-rm``
``judge[=MODEL]``         an LLM judge: the search policy, a model folder, or ``smollm2``
``hybrid=FILE``           fitted hybrid weights (``mcts-agent fit-hybrid``); the file names
                          its components' own specs
========================  ===============================================================

**How a spec becomes a critic.** ``NAME`` is looked up in the registry (an unknown name is
refused with the closest installed one and the list of all). Then:

1. If the factory has a classmethod ``from_spec(arg: str | None, context: CriticContext) ->
   Critic``, it gets ARG as written (None for a bare ``NAME``) and a :class:`CriticContext`:
   the search ``policy``, ``mode``, ``seed``, the ``rollouts`` default, ``max_step_tokens``,
   ``max_depth``, and ``build(spec)``, which builds another spec with the same context (what
   a composite critic such as ``hybrid`` builds its components with). The built-in critics
   all read their specs so.
2. Otherwise the generic rule, on the factory's signature:

   - ``NAME`` → ``factory(**injected)``;
   - ``NAME=VALUE`` (no ``=`` in VALUE) → VALUE for the factory's first parameter that is
     not injected;
   - ``NAME=K1=V1,K2=V2`` → keyword arguments (a value cannot hold a comma).

   ``injected`` holds whichever of ``policy``, ``mode``, ``seed`` the factory names as
   parameters, from the search (an argument in the spec wins). Values are read as YAML
   scalars (``8``, ``0.5``, ``true``, ``[3, 4]``); a parameter annotated ``str`` keeps the
   text as written, and so does text YAML cannot read.

Every built critic is checked against :class:`~mcts_agent.contracts.Critic`. A spec that
cannot be used is a one-line :class:`~mcts_agent.errors.ConfigError`: an unknown name, an
argument for a critic that takes none (``verifier=3``), a required argument missing
(``reward-model`` without its folder), arguments a plug-in's factory does not take (the
message names the plug-in and its signature).

A third-party critic needs no code here: declare it in the plug-in package's
``pyproject.toml`` and it is a spec::

    [project.entry-points."mcts_agent.critics"]
    threshold = "my_package.critics:ThresholdCritic"   # __init__(self, policy, cutoff=0.5)

    mcts-agent search --critic threshold             # ThresholdCritic(policy=<search policy>)
    mcts-agent search --critic threshold=0.7         # … cutoff=0.7
    mcts-agent search --critic threshold=cutoff=0.7  # the same, by keyword

**Several specs** make an equal-weight hybrid. The search critic always has the verifier in
front: in data mode it judges finished states with the reference; in inference mode it sets
failed episodes (finished without an answer) to 0, which a learned critic might not know; the
named critics judge the rest.

**What scored.** :func:`describe_critic` turns a critic into a JSON-able record — its name,
class, the spec it was built from and its settings (a critic's optional ``describe()``
method; critics inside, such as the verifier's fallback and a hybrid's components, are
described in turn); a run folder's ``config.yaml`` keeps it.
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..contracts import Critic, check_critic
from ..errors import ConfigError, UserError
from ..hybrid import HybridWeights
from ..llm.base import Policy
from ..registry import critics
from .config import SearchConfig

INJECTED = ("policy", "mode", "seed")
"""What the generic rule passes a plug-in factory that names these parameters."""


@dataclass(frozen=True)
class CriticContext:
    """What a critic built from a spec may use besides its own ARG: the search's policy and
    settings. ``build(spec)`` builds another spec with this same context."""

    policy: Policy | None = None
    mode: Literal["data", "inference"] = "data"
    seed: int = 0
    rollouts: int = 4
    max_step_tokens: int = 48
    max_depth: int = 12
    shared: Mapping[str, Critic] = field(default_factory=dict)
    """Critics already built elsewhere, by spec: a spec found here is not built again (a Ray
    run's workers share one copy of a judge or reward model this way)."""

    @classmethod
    def of(cls, policy: Policy | None, config: SearchConfig, rollouts: int = 4,
           shared: Mapping[str, Critic] | None = None) -> CriticContext:
        """The context of a search with ``config`` (``rollouts``: K of a bare ``rollout``)."""
        return cls(policy=policy, mode=config.mode, seed=config.seed, rollouts=rollouts,
                   max_step_tokens=config.max_step_tokens, max_depth=config.max_depth,
                   shared=dict(shared or {}))

    def build(self, spec: str) -> Critic:
        return build_spec(spec, self)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[=ARG]`` → (NAME, ARG or None); NAME must be an installed critic."""
    if not isinstance(spec, str):
        raise ConfigError(f"a critic spec is text (NAME or NAME=ARG), got {spec!r}")
    name, _, arg = spec.strip().partition("=")
    name = name.strip()
    if not name:
        raise ConfigError(f"critic spec {spec!r} has no name; write NAME or NAME=ARG")
    if name not in critics.names():
        critics.factory(name)  # raises the registry's error: closest name, installed critics
    return name, arg or None


_BUILDING: ContextVar[tuple[str, ...]] = ContextVar("critic_specs_building", default=())


def build_spec(spec: str, context: CriticContext) -> Critic:
    """The critic one spec names (never wrapped in the verifier), checked against the
    :class:`~mcts_agent.contracts.Critic` contract and remembered for :func:`describe_critic`."""
    name, arg = parse_spec(spec)
    spec = spec.strip()
    if spec in context.shared:
        return context.shared[spec]
    building = _BUILDING.get()
    if spec in building:  # a hybrid file naming itself would recurse forever
        raise ConfigError(f"critic spec {spec!r} contains itself: "
                          f"{' → '.join((*building, spec))}")
    token = _BUILDING.set((*building, spec))
    try:
        factory = critics.factory(name)
        from_spec = getattr(factory, "from_spec", None)
        if callable(from_spec):
            critic = from_spec(arg, context)
        else:
            critic = _build_generic(name, factory, arg, context)
    finally:
        _BUILDING.reset(token)
    check_critic(critic, label=spec)
    _remember(critic, spec)
    return critic


def build_component(spec: str, policy: Policy | None, config: SearchConfig,
                    rollouts: int = 4) -> tuple[str, Critic]:
    """The critic one spec names (never wrapped in the verifier), and its name."""
    name, _ = parse_spec(spec)
    return name, build_spec(spec, CriticContext.of(policy, config, rollouts))


def build_critic(specs: Sequence[str], policy: Policy | None, config: SearchConfig,
                 rollouts: int = 4, shared: Mapping[str, Critic] | None = None) -> Critic:
    """The search critic for ``specs`` (see the module docstring); ``shared``: critics built
    elsewhere, by spec, used as they are."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ConfigError("name at least one critic")
    names = [parse_spec(spec)[0] for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"each critic may be named once, got {list(specs)}")
    context = CriticContext.of(policy, config, rollouts, shared)
    parts = {name: build_spec(spec, context) for name, spec in zip(names, specs, strict=True)}
    critic = parts[names[0]] if len(parts) == 1 else _equal_hybrid(parts, specs)
    if "verifier" in names:
        return critic
    verifier = critics.create("verifier", fallback=critic, reference=context.mode == "data")
    _remember(verifier, "verifier")
    return verifier


def _equal_hybrid(parts: Mapping[str, Critic], specs: Sequence[str]) -> Critic:
    """The plain mean of ``parts``; its weights name each component's spec, so the record
    (and the weights, saved) rebuild it."""
    names = list(parts)
    weights = HybridWeights(names, [1.0] * len(names), combine="mean",
                            specs={name: spec.strip() for name, spec in zip(names, specs,
                                                                            strict=True)})
    return critics.create("hybrid", components=parts, weights=weights)


def judge_policy(model: str | None, policy: Policy | None) -> Policy:
    """The judge's model: the search policy itself, SmolLM2 (``smollm2``), or a folder."""
    if model is None:
        if policy is None:
            raise ConfigError("the judge has no model: pass the search policy or judge=MODEL")
        return policy
    from ..llm.load import load_policy

    if model == "smollm2":
        from ..models.smollm2 import smollm2_path

        return load_policy(smollm2_path())
    return load_policy(model)


# --------------------------------------------------------------------------- the generic rule


def _build_generic(name: str, factory: Callable[..., Any], arg: str | None,
                   context: CriticContext) -> Any:
    """A plug-in without ``from_spec``: ARG as arguments of its factory (module docstring)."""
    signature = _signature(factory)
    params = signature.parameters if signature is not None else {}
    injected = {key: getattr(context, key) for key in INJECTED if key in params}
    kwargs = {**injected, **_spec_arguments(name, factory, arg, signature, injected)}
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            raise ConfigError(f"critic plug-in {name!r} cannot be built from "
                              f"{_written(name, arg)}: {err}; its factory is "
                              f"{_where(factory, signature)}") from None
    try:
        return factory(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as err:  # the factory refused the values themselves
        raise ConfigError(f"critic plug-in {name!r} rejected {_written(name, arg)}: {err} "
                          f"(its factory is {_where(factory, signature)})") from err


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    """The factory's signature, annotations resolved where they can be (for messages)."""
    for resolve in (True, False):
        try:
            return inspect.signature(factory, eval_str=resolve)
        except (TypeError, ValueError):  # a builtin: nothing to read, nothing to inject
            return None
        except Exception:  # an annotation that does not resolve: show it as written
            continue
    return None


def _spec_arguments(name: str, factory: Callable[..., Any], arg: str | None,
                    signature: inspect.Signature | None,
                    injected: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ARG spells: none, ``K1=V1,K2=V2``, or one value for the first free
    parameter; values read as the registry reads ``KEY=VALUE`` texts."""
    if arg is None:
        return {}
    if "=" in arg:
        return critics.parse_args(name, _keywords(name, arg))
    params = signature.parameters.values() if signature is not None else ()
    free = [p for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in injected]
    if not free:
        raise ConfigError(f"critic {name!r} takes no argument, got {_written(name, arg)}; "
                          f"write `{name}` (its factory is {_where(factory, signature)})")
    return critics.parse_args(name, {free[0].name: arg})


def _keywords(name: str, arg: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in arg.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or key in pairs:
            raise ConfigError(f"cannot read {_written(name, arg)} at {part!r}: write "
                              f"{name}=VALUE or {name}=KEY=VALUE,KEY=VALUE (each key once)")
        pairs[key] = value.strip()
    return pairs


def _written(name: str, arg: str | None) -> str:
    return f"`{name}`" if arg is None else f"`{name}={arg}`"


def _where(factory: Callable[..., Any], signature: inspect.Signature | None) -> str:
    module = getattr(factory, "__module__", None) or "?"
    name = getattr(factory, "__qualname__", None) or repr(factory)
    return f"{module}:{name}{signature if signature is not None else '(…)'}"


# --------------------------------------------------------------------------- what scored

_SPECS: dict[int, str] = {}  # id(critic) → the spec it was built from, while it lives
_PINNED: list[Any] = []  # built critics that cannot be weakly referenced: kept, so ids stay theirs


def _remember(critic: Any, spec: str) -> None:
    key = id(critic)
    _SPECS[key] = spec
    try:
        weakref.finalize(critic, _SPECS.pop, key, None)
    except TypeError:
        _PINNED.append(critic)


def describe_critic(critic: Critic) -> dict[str, Any]:
    """What scored, JSON-able: ``name``, ``class``, ``spec`` (when built from one) and
    ``settings`` (the critic's own ``describe()``, if it has one; critics inside it — the
    verifier's fallback, a hybrid's components — are described the same way)."""
    if isinstance(stands_for := getattr(critic, "description", None), dict):
        return stands_for  # a proxy (a Ray run's shared critic) is described as what it calls
    kind = type(critic)
    described: dict[str, Any] = {"name": getattr(critic, "name", kind.__name__),
                                 "class": f"{kind.__module__}.{kind.__qualname__}"}
    if (spec := _SPECS.get(id(critic))) is not None:
        described["spec"] = spec
    settings = getattr(critic, "describe", None)
    if callable(settings):
        described["settings"] = _jsonable(settings())
    return described


def _jsonable(value: Any) -> Any:
    if isinstance(value, Critic):
        return describe_critic(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    # anything else as text, without memory addresses: a resumed run compares records
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(value))
