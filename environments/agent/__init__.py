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
    transitions_match,
)

__all__ = [
    "AgentEnvironment",
    "AgentState",
    "Simulator",
    "SimulatorPool",
    "TextGame",
    "Transition",
    "Turn",
    "transitions_match",
]
