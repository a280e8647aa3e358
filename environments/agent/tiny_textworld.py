"""The environment the tiny TextWorld agent (:mod:`mcts_agent.models.tiny_agent`) was trained
in, registered as ``textworld-tiny``: TextWorld games with :data:`GAME_SETTINGS`, prompted with
:data:`ENVIRONMENT_SETTINGS`."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import AgentEnvironment
from .textworld_game import TextWorldGame

__all__ = ["ENVIRONMENT_SETTINGS", "GAME_SETTINGS", "tiny_agent_environment"]

GAME_SETTINGS: dict[str, Any] = {"world_size": 3, "nb_objects": 4, "quest_length": 3,
                                 "theme": "house"}
"""The TextWorld games the agent was trained on (:class:`TextWorldGame` arguments)."""

ENVIRONMENT_SETTINGS: dict[str, Any] = {"instructions": None, "max_history": 2,
                                        "show_valid_actions": True}
"""How the agent was prompted (:class:`AgentEnvironment` arguments): no system message, the
last two turns, the valid actions listed."""


def tiny_agent_environment(**overrides: Any) -> AgentEnvironment:
    """Entry point ``textworld-tiny``: the environment the tiny agent was trained in.

    ``overrides`` replace either settings: :class:`TextWorldGame` arguments (``cache_dir``,
    ``seed``, ``quest_length`` …) go to the game, the rest (``pool_size``, ``max_history`` …)
    to :class:`AgentEnvironment`. Changing a trained setting puts the agent off its training
    distribution.
    """
    game_fields = {f.name for f in dataclasses.fields(TextWorldGame) if f.init}
    game_args = {**GAME_SETTINGS, **{k: v for k, v in overrides.items() if k in game_fields}}
    env_args = {**ENVIRONMENT_SETTINGS,
                **{k: v for k, v in overrides.items() if k not in game_fields}}
    return AgentEnvironment(TextWorldGame(**game_args), **env_args)
