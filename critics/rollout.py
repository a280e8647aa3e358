"""Monte Carlo rollouts: finish the episode k times from a node with the policy.

Data mode: value = share of rollouts the verifier accepts (Math-Shepherd / OmegaPRM labels).
Inference mode (no reference): value = share of rollouts whose answer agrees with the task's
majority answer so far (self-consistency); for code (a ``TestedEnvironment``) the mean share of
the prompt's visible tests the rolled-out programs pass, all of a call's programs graded in one
batched sandbox call. All nodes of a call are rolled out in ONE batched
``propose``; results are cached by (task, state).

An interactive environment (an agent) is rolled out turn by turn instead, every rollout's next
turn in one batched call (:func:`~mcts_agent.episodes.play_episodes`). Games report their own
verdict while playing, so for environments without answers the value is the share of won
rollouts in either mode.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from critics.cache import StateCache
from mcts_agent.contracts import (
    Assessment,
    CriticInput,
    TestedEnvironment,
    check_score,
    checked_score,
    final_answer,
    has_answers,
    is_interactive,
)
from mcts_agent.episodes import play_episodes, play_text
from mcts_agent.errors import ConfigError
from mcts_agent.llm.base import GenerationRequest, Policy

if TYPE_CHECKING:
    from mcts_agent.search.critic_specs import CriticContext


class RolloutCritic:
    name = "rollout"

    def __init__(
        self,
        policy: Policy,
        k: int = 4,
        max_tokens: int = 128,
        temperature: float = 1.0,
        mode: Literal["data", "inference"] = "data",
        seed: int = 0,
        max_cache: int = 100_000,
        max_turns: int = 12,
        step_tokens: int = 48,
    ) -> None:
        if k < 1:
            raise ValueError("k (rollouts per node) must be at least 1")
        self.policy, self.k, self.max_tokens = policy, k, max_tokens
        self.temperature, self.mode, self.seed = temperature, mode, seed
        self.max_turns, self.step_tokens = max_turns, step_tokens  # interactive rollouts
        self.cache = StateCache(max_cache)  # unfinished states only: finished ones are
        # judged by the votes so far, which keep changing
        self.votes: dict[str, Counter] = defaultdict(Counter)  # task id → rollout answers

    @classmethod
    def from_spec(cls, arg: str | None, context: CriticContext) -> RolloutCritic:
        """``rollout[=K]``: K rollouts per node (default ``context.rollouts``) with the search
        policy, as long as a whole episode of the search may be."""
        if context.policy is None:
            raise ConfigError("rollout needs the search policy to roll out with")
        k = context.rollouts if arg is None else _rollout_count(arg)
        return cls(context.policy, k=k, mode=context.mode, seed=context.seed,
                   max_tokens=context.max_step_tokens * context.max_depth,
                   max_turns=context.max_depth, step_tokens=context.max_step_tokens)

    def describe(self) -> dict[str, Any]:
        return {"k": self.k, "mode": self.mode, "seed": self.seed,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "max_turns": self.max_turns, "step_tokens": self.step_tokens,
                "policy": getattr(self.policy, "name", type(self.policy).__name__)}

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        out: list[Assessment | None] = [None if n.done else self.cache.get(n) for n in nodes]
        todo = [i for i, a in enumerate(out) if a is None and not nodes[i].done]
        finals, tokens = self._roll_out([nodes[i] for i in todo]) if todo else ([], [])
        finals, tokens = dict(zip(todo, finals, strict=True)), dict(zip(todo, tokens, strict=True))
        if self.mode == "inference":  # tally first, so every node is judged by the same votes
            for i, results in finals.items():
                self.votes[nodes[i].task.id].update(a for _, a, _ in results if a is not None)
        for i, node in enumerate(nodes):
            if out[i] is not None:
                continue
            if node.done:
                out[i] = self._judge_finished(node)
            else:
                out[i] = self._judge_rollouts(node, finals[i], tokens[i])
                self.cache.put(node, out[i])
        return out  # type: ignore[return-value]

    def _roll_out(self, nodes: list[CriticInput]) -> tuple[list[list], list[int]]:
        """Per node, ``k`` (score, answer, text) results and the tokens they cost."""
        env = nodes[0].environment
        if is_interactive(env):
            groups = play_episodes(env, self.policy, [(n.task, n.state) for n in nodes],
                                   n=self.k, max_turns=self.max_turns,
                                   max_step_tokens=self.step_tokens,
                                   temperature=self.temperature, seed=self.seed)
            return ([[self._ended(node, e.state, e.text) if e.done else (0.0, None, None)
                      for e in group] for node, group in zip(nodes, groups, strict=True)],
                    [sum(e.tokens for e in group) for group in groups])
        completions = self.policy.propose([self._request(node) for node in nodes])
        played = [[(*play_text(node.environment, node.state, c.text), c.text) for c in cands]
                  for node, cands in zip(nodes, completions, strict=True)]
        if isinstance(env, TestedEnvironment):  # grade every finished program in one call
            env.prefetch([(state, node.task) for node, group in zip(nodes, played, strict=True)
                          for state, done, _ in group if done], visible=self.mode == "inference")
        return ([[self._ended(node, state, text) if done else (0.0, None, None)
                  for state, done, text in group]
                 for node, group in zip(nodes, played, strict=True)],
                [sum(c.num_tokens for c in cands) for cands in completions])

    def _request(self, node: CriticInput) -> GenerationRequest:
        key = f"{self.seed}/{node.task.id}/{node.state!r}"
        return GenerationRequest(node.environment.prompt(node.state), n=self.k,
                                 max_tokens=self.max_tokens, temperature=self.temperature,
                                 seed=zlib.crc32(key.encode()))

    def _ended(self, node: CriticInput, state: Any, text: str) -> tuple[float | None, Any, str]:
        """(score, answer, text) of a finished rollout; the score is None where answers are
        voted on instead."""
        return self._score(node, state), final_answer(node.environment, state), text

    def _scored(self, node: CriticInput) -> bool:
        """Whether endings are scored (data mode, games, code's visible tests) rather than
        voted on (inference mode with answers)."""
        env = node.environment
        return self.mode == "data" or not has_answers(env) or _visible_tests(env, node)

    def _score(self, node: CriticInput, state: Any) -> float | None:
        env = node.environment
        if not self._scored(node):
            return None
        if self.mode == "inference" and _visible_tests(env, node):
            return check_score(env, env.visible_score(state, node.task), node.task)
        return checked_score(env, state, node.task)

    def _judge_rollouts(self, node: CriticInput, results: list, tokens: int) -> Assessment:
        if self._scored(node):
            scores = [s or 0.0 for s, _, _ in results]
            value = sum(scores) / len(scores)
        else:
            votes = self.votes[node.task.id]
            majority = votes.most_common(1)[0][0] if votes else None
            value = sum(a is not None and a == majority for _, a, _ in results) / len(results)
        # finished rollouts go back to the driver, which grafts them into the tree (rStar-Math
        # keeps every rollout's nodes); unfinished ones are dropped
        return Assessment(value, tokens=tokens,
                          completions=tuple(t for _, _, t in results if t),
                          details={"answers": [a for _, a, _ in results]})

    def _judge_finished(self, node: CriticInput) -> Assessment:
        env = node.environment
        if self._scored(node):
            score = self._score(node, node.state)
            return Assessment(0.0 if score is None else score)
        answer = final_answer(env, node.state)
        votes = self.votes[node.task.id]
        total = sum(votes.values())
        if answer is None:  # the episode failed
            return Assessment(0.0, details={"answer": None})
        value = votes[answer] / total if total else 0.5
        return Assessment(value, details={"answer": answer, "votes": total})


def _visible_tests(env: Any, node: CriticInput) -> bool:
    """Code whose task shows tests: inference mode judges programs by those (asking an
    unfinished state runs nothing)."""
    return isinstance(env, TestedEnvironment) and env.visible_score(node.state,
                                                                    node.task) is not None


def _rollout_count(arg: str) -> int:
    try:
        k = int(arg)
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"rollout=K takes a whole number of rollouts per node (1 or more), "
                          f"got rollout={arg}")
    return k
