"""Critics from short specs, as the CLI and YAML configs name them.

A spec is ``NAME`` or ``NAME=ARG``:

========================  ===============================================================
``rollout[=K]``           Monte Carlo rollouts with the search policy (K per node)
``verifier``              finished states: the reference answer (data mode); only failed
                          episodes, at 0 (inference mode)
``reward-model=DIR``      a reward model saved by ``mcts-agent train-rm``
``judge[=MODEL]``         an LLM judge: the search policy, a model folder, or ``smollm2``
``hybrid=FILE``           fitted hybrid weights (``mcts-agent fit-hybrid``); the file names
                          its components' own specs
========================  ===============================================================

Several specs make an equal-weight hybrid. The search critic always has the verifier in
front: in data mode it judges finished states with the reference; in inference mode it sets
failed episodes (finished without an answer) to 0, which a learned critic might not know; the
named critics judge the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..contracts import Critic
from ..llm.base import Policy
from ..registry import critics
from .config import SearchConfig

NAMES = ("rollout", "verifier", "reward-model", "judge", "hybrid")


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.strip().partition("=")
    if name not in NAMES:
        raise ValueError(f"unknown critic {name!r} in {spec!r}; use one of "
                         f"{', '.join(NAMES)} (NAME or NAME=ARG)")
    return name, arg or None


def build_component(spec: str, policy: Policy, config: SearchConfig,
                    rollouts: int = 4) -> tuple[str, Critic]:
    """The critic one spec names (never wrapped in the verifier), and its display name."""
    name, arg = parse_spec(spec)
    if name == "rollout":
        k = int(arg) if arg else rollouts
        return name, critics.create(
            "rollout", policy=policy, k=k, mode=config.mode, seed=config.seed,
            max_tokens=config.max_step_tokens * config.max_depth,
            max_turns=config.max_depth, step_tokens=config.max_step_tokens)
    if name == "verifier":
        return name, critics.create("verifier", reference=config.mode == "data")
    if name == "reward-model":
        if not arg:
            raise ValueError("reward-model needs its folder: reward-model=DIR")
        return name, critics.create("reward-model", path=Path(arg))
    if name == "judge":
        return name, critics.create("judge", policy=judge_policy(arg, policy), seed=config.seed)
    from critics.hybrid import HybridCritic, HybridWeights

    if not arg:
        raise ValueError("hybrid needs its weights file: hybrid=FILE (from fit-hybrid)")
    weights = HybridWeights.load(arg)
    if missing := [c for c in weights.components if c not in weights.specs]:
        raise ValueError(f"{arg}: no spec for components {missing}")
    return name, HybridCritic({c: build_component(weights.specs[c], policy, config,
                                                  rollouts)[1]
                               for c in weights.components}, weights)


def judge_policy(model: str | None, policy: Policy) -> Policy:
    """The judge's model: the search policy itself, SmolLM2 (``smollm2``), or a folder."""
    if model is None:
        return policy
    from .run import load_policy

    if model == "smollm2":
        from ..models.smollm2 import smollm2_path

        return load_policy(smollm2_path())
    return load_policy(model)


def build_critic(specs: Sequence[str], policy: Policy, config: SearchConfig,
                 rollouts: int = 4) -> Critic:
    """The search critic for ``specs`` (see the module docstring)."""
    if not specs:
        raise ValueError("name at least one critic")
    from critics.hybrid import HybridCritic

    parts = [build_component(spec, policy, config, rollouts) for spec in specs]
    names = [name for name, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"each critic may be named once, got {list(specs)}")
    critic = parts[0][1] if len(parts) == 1 else HybridCritic(dict(parts))
    if "verifier" in names:
        return critic
    return critics.create("verifier", fallback=critic, reference=config.mode == "data")
