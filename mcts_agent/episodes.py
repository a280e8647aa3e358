"""Playing whole episodes: a generated text through an environment, or an interactive agent
turn by turn with every live episode's next turn in one batched policy call."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .contracts import Environment, Task, action_text, is_interactive
from .llm.base import GenerationRequest, Policy


def play_text(env: Environment, state: Any, text: str) -> tuple[Any, bool]:
    """Apply each non-empty line (``env.step_delimiter``-separated) of ``text`` to ``state``
    until the episode ends; returns (last state, whether it ended). An environment error ends
    the play where it happened, unfinished: a garbled completion is a failed one."""
    for line in (action_text(env, ln) for ln in text.split(env.step_delimiter)):
        if not line:
            continue
        try:
            step = env.step(state, line)
        except Exception:
            return state, False
        state = step.state
        if step.done:
            return state, True
    return state, False


@dataclass
class Episode:
    """One played episode: the last state, whether it ended, the replies, generated tokens."""

    task: Task
    state: Any
    done: bool = False
    replies: list[str] = field(default_factory=list)
    tokens: int = 0

    @property
    def text(self) -> str:
        """The replies as one text, one per line (how the tree grafts a rollout)."""
        return "".join(f"{reply}\n" for reply in self.replies)


def play_episodes(
    env: Environment,
    policy: Policy,
    starts: Sequence[tuple[Task, Any]],
    *,
    n: Sequence[int] | int = 1,
    max_turns: int,
    max_step_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[Episode]]:
    """Play ``n[i]`` episodes from each ``(task, state)`` in ``starts`` for at most ``max_turns``
    turns each. Every turn is ONE ``propose`` call for all episodes still running; an
    environment error ends that episode unfinished, and so does an empty reply unless the
    environment is interactive (an agent's empty reply is a rejected turn the game answers).
    Seeds depend on (seed, start, sample, turn), so results do not depend on batching."""
    counts = [n] * len(starts) if isinstance(n, int) else list(n)
    episodes = [[Episode(task, state) for _ in range(count)]
                for (task, state), count in zip(starts, counts, strict=True)]
    live = [(i, j) for i, group in enumerate(episodes) for j in range(len(group))]
    turns_are_replies = is_interactive(env)
    for turn in range(max_turns):
        if not live:
            break
        requests = [GenerationRequest(
            env.prompt(episodes[i][j].state), n=1, max_tokens=max_step_tokens,
            temperature=temperature, top_p=top_p, stop=(env.step_delimiter,),
            seed=zlib.crc32(f"{seed}/{i}/{j}/{turn}/{episodes[i][j].task.id}".encode()))
            for i, j in live]
        still = []
        for (i, j), [candidate] in zip(live, policy.propose(requests), strict=True):
            episode = episodes[i][j]
            episode.tokens += candidate.num_tokens
            reply = candidate.text.strip()
            if not reply and not turns_are_replies:
                continue
            try:
                step = env.step(episode.state, reply)
            except Exception:  # a crashing environment ends this episode, not the batch
                continue
            episode.state = step.state
            episode.replies.append(reply)
            episode.done = step.done
            if not step.done:
                still.append((i, j))
        live = still
    return episodes
