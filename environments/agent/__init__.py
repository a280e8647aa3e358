"""Interactive text environments for agents: the contract (:mod:`.base`), ReAct turns
(:mod:`.react`) and the games that run offline (TextWorld, ScienceWorld, textarena, BabyAI) plus
an adapter for any gymnasium text environment."""

from .base import (
    AgentEnvironment,
    AgentState,
    Simulator,
    SimulatorPool,
    TextGame,
    Transition,
    Turn,
    transitions_match,
)
from .react import DEFAULT_INSTRUCTIONS, ParsedAction, parse_action, render_turn

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "AgentEnvironment",
    "AgentState",
    "ParsedAction",
    "Simulator",
    "SimulatorPool",
    "TextGame",
    "Transition",
    "Turn",
    "parse_action",
    "render_turn",
    "transitions_match",
]
