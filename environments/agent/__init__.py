"""Interactive text environments for agents: the contract (:mod:`.base`) and the games that
run offline (TextWorld, ScienceWorld, textarena, BabyAI) plus an adapter for any gymnasium text
environment. Replies are read in the ReAct format of :mod:`mcts_agent.react`."""

from .base import (
    AgentEnvironment,
    AgentState,
    Simulator,
    SimulatorPool,
    TextGame,
    Transition,
    Turn,
    prompt_key,
    transitions_match,
)
from .constrained import AdmissiblePolicy

__all__ = [
    "AdmissiblePolicy",
    "AgentEnvironment",
    "AgentState",
    "Simulator",
    "SimulatorPool",
    "TextGame",
    "Transition",
    "Turn",
    "prompt_key",
    "transitions_match",
]
