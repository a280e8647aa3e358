"""Failure → recovery dialogues from agent trees (Agent-R), validated by replay.

From one finished tree:

1. **Pair** a low-value trajectory with a high-value one: the good one's value is at least
   ``alpha``, the gap at least ``beta`` (floats, compared as numbers). A trajectory ends at a
   finished node (its verified score is its value) or at a leaf (its backed-up mean). Each bad
   trajectory is paired with the good one it shares the longest prefix with: the branch point
   is where they part.
2. **Find the first bad step** on the bad trajectory after the branch point: the first node
   whose value falls below ``bad_below`` — by the tree's value estimates, by a critic (an LLM
   judge scoring each prefix; one batched call for all candidates), or by both (their mean). If
   no step looks bad, the last one is blamed.
3. **Splice**: the bad prefix (up to and including that step), a revision turn — a revision
   sentence as the thought, with the good trajectory's first action after the branch point —
   then the good trajectory's remaining replies. When the game can undo commands
   (``game.inverse(command)``, e.g. ``go east`` → ``go west``), the revision turn first undoes
   the bad commands, newest first, so the good continuation starts where it started in the
   tree; without undo it is played from wherever the bad prefix left the agent.
4. **Validate by replay**: the dialogue is played in the game from the start, in a fresh
   simulator without caches. It is kept only if every good action is still accepted after the
   bad prefix, the episode is won, and (``same_observations``) the good continuation shows
   exactly the observations it showed from the branch point. Agent-R's code never undid the
   bad steps, so a splice whose bad step changed the world taught a continuation that cannot
   happen; here it is rejected and counted.

Training sees the bad prefix only as context: the loss is on the revision turn and the good
continuation.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..contracts import Critic, CriticInput, Environment
from ..settings import Settings
from ..trees import ReplayedTree, TreeRecord, replay_trees

log = logging.getLogger(__name__)

Row = dict[str, Any]

REVISIONS = (
    "I realize my approach was flawed. I need to revise it and take a different action.",
    "My previous actions were not leading to the goal. Let me reconsider and correct course.",
    "That was a mistake; it does not bring me closer to the goal. I should try another action.",
    "Looking back, my last steps were wrong. I will go back to a better plan.",
)


class SpliceConfig(Settings):
    """How failure → recovery dialogues are cut from a tree. Immutable; unknown fields are
    rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.5, ge=0, le=1, description="A good trajectory's value is at least "
                         "this.")
    beta: float = Field(0.3, ge=0, le=1, description="value(good) − value(bad) at least this.")
    first_bad: Literal["value", "critic", "both"] = Field(
        "value", description="What finds the first bad step: the tree's value estimates, a "
        "critic (e.g. an LLM judge) on each prefix, or the mean of both.")
    bad_below: float = Field(0.5, ge=0, le=1, description="A step is bad when its value is "
                             "below this.")
    revisions: tuple[str, ...] = Field(REVISIONS, min_length=1, description="Revision "
                                       "thoughts, one drawn per dialogue.")
    same_observations: bool = Field(
        True, description="Keep a splice only if the good continuation shows the same "
        "observations after the bad prefix as from the branch point (False: the re-played "
        "observations are used, and the splice is kept when it still wins).")
    max_per_tree: int = Field(4, ge=1, description="Dialogues per tree.")
    seed: int = 0


@dataclass(frozen=True)
class Splice:
    """One validated failure → recovery dialogue."""

    task_id: str
    branch: int  # local node ids in the tree
    bad: int  # the first bad step
    good: int  # the good trajectory's end
    bad_value: float
    good_value: float
    revision: str
    replies: tuple[str, ...]  # every assistant turn, bad prefix included
    trained_from: int  # replies[trained_from:] are the revision and the good continuation
    state: Any  # the game state the dialogue ends in (won)


def _interactive(env: Environment) -> None:
    if not hasattr(env, "verify_dialogue") or not hasattr(env, "play"):
        raise ValueError(f"environment {env.name!r} is not an agent environment: splicing "
                         "needs turns played in a game (environments.agent.AgentEnvironment)")


def trajectory_value(tree: ReplayedTree, i: int) -> float | None:
    """A finished node's verified score when known, else its backed-up mean value."""
    return tree.nodes[i].rate


def _ends(tree: ReplayedTree) -> list[int]:
    """Trajectory ends: finished nodes, and leaves that were visited."""
    return [i for i, node in enumerate(tree.nodes)
            if i and (node.terminal or (not tree.children[i] and node.visits > 0))]


def _shared(a: list[int], b: list[int]) -> int:
    """How many leading nodes two root paths share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class _Candidate:
    tree: ReplayedTree
    bad_path: list[int]  # root excluded
    good_path: list[int]
    shared: int  # nodes both paths share
    bad_value: float
    good_value: float


def _candidates(tree: ReplayedTree, config: SpliceConfig, counts: Counter) -> list[_Candidate]:
    valued = [(i, trajectory_value(tree, i)) for i in _ends(tree)]
    valued = [(i, v) for i, v in valued if v is not None]
    good = [(i, v) for i, v in valued if v >= config.alpha]
    out = []
    for bad, bad_value in sorted(valued, key=lambda iv: (iv[1], iv[0])):
        partners = [(g, v) for g, v in good if v - bad_value >= config.beta - 1e-9]
        if not partners:
            continue
        bad_path = tree.path(bad)
        # the good trajectory that parts latest: the smallest correction
        g, v = max(partners, key=lambda gv: (_shared(bad_path, tree.path(gv[0])), gv[1],
                                             -len(tree.path(gv[0])), -gv[0]))
        good_path = tree.path(g)
        shared = _shared(bad_path, good_path)
        if shared >= len(bad_path):  # the bad trajectory is a prefix of the good one
            counts["bad_is_prefix"] += 1
            continue
        out.append(_Candidate(tree, bad_path, good_path, shared, bad_value, v))
    counts["candidates"] += len(out)
    return out


def _first_bad(candidates: list[_Candidate], config: SpliceConfig,
               critic: Critic | None) -> list[int]:
    """Per candidate, the index in its bad path of the first bad step."""
    judged: dict[tuple[int, int], float] = {}
    if config.first_bad != "value":
        if critic is None:
            raise ValueError(f"first_bad={config.first_bad!r} needs a critic (e.g. a judge)")
        wanted = [(c, j) for c in candidates for j in range(c.shared, len(c.bad_path))]
        assessments = critic.evaluate([
            CriticInput(c.tree.record.task, c.tree.env, c.tree.state(c.bad_path[j]),
                        c.tree.nodes[c.bad_path[j]].terminal) for c, j in wanted])
        judged = {(id(c), j): a.value for (c, j), a in zip(wanted, assessments, strict=True)}
    out = []
    for c in candidates:
        first = len(c.bad_path) - 1
        for j in range(c.shared, len(c.bad_path)):
            tree_value = trajectory_value(c.tree, c.bad_path[j])
            values = []
            if config.first_bad in ("value", "both") and tree_value is not None:
                values.append(tree_value)
            if config.first_bad in ("critic", "both"):
                values.append(judged[(id(c), j)])
            if values and sum(values) / len(values) < config.bad_below:
                first = j
                break
        out.append(first)
    return out


def splice_tree(tree: ReplayedTree, config: SpliceConfig, critic: Critic | None = None,
                counts: Counter | None = None) -> list[Splice]:
    """The validated splices of one tree (see the module docstring)."""
    counts = Counter() if counts is None else counts
    env: Any = tree.env
    _interactive(env)
    task = tree.record.task
    rng = random.Random(f"{config.seed}/{task.id}")
    candidates = _candidates(tree, config, counts)
    out: list[Splice] = []
    used: set[tuple[int, int]] = set()
    for cand, t in zip(candidates, _first_bad(candidates, config, critic), strict=True):
        if len(out) >= config.max_per_tree:
            break
        bad_node = cand.bad_path[t]
        if (bad_node, cand.good_path[-1]) in used:
            counts["duplicate"] += 1
            continue
        used.add((bad_node, cand.good_path[-1]))
        splice = _splice(env, tree, cand, t, rng.choice(config.revisions), config, counts)
        if splice is not None:
            out.append(splice)
            counts["spliced"] += 1
    return out


def _splice(env: Any, tree: ReplayedTree, cand: _Candidate, t: int, revision: str,
            config: SpliceConfig, counts: Counter) -> Splice | None:
    from ..react import parse_action, render_turn

    task = tree.record.task
    bad = cand.bad_path[t]
    prefix = [tree.action(i) for i in cand.bad_path[:t + 1]]
    good = cand.good_path[cand.shared:]
    first = parse_action(tree.action(good[0])).action
    if first is None or any(tree.state(i).turns[-1].action is None for i in good):
        counts["rejected_good_has_rejected_replies"] += 1  # never train on a rejected reply
        return None
    branch = cand.bad_path[cand.shared - 1] if cand.shared else 0
    undo = _undo(env, tree.state(bad).commands[len(tree.state(branch).commands):])
    if undo:
        recovery = [render_turn(undo[0], revision), *map(render_turn, undo[1:]),
                    tree.action(good[0])]
    else:
        recovery = [render_turn(first, revision)]
    replies = [*prefix, *recovery, *(tree.action(i) for i in good[1:])]
    state = env.play(task, replies)
    trained = state.turns[len(prefix) + len(recovery) - 1:]
    if len(trained) < len(good) or any(turn.action is None for turn in state.turns[len(prefix):]):
        counts["rejected_not_accepted_after_bad_prefix"] += 1
        return None
    if not state.won:
        counts["rejected_not_won"] += 1
        return None
    if config.same_observations:
        recorded = [tree.state(i).turns[-1].observation for i in good]
        if [turn.observation for turn in trained] != recorded:
            counts["rejected_observations_diverge"] += 1
            return None
    if not env.verify_dialogue(task, env.messages(state)):
        counts["rejected_replay_mismatch"] += 1
        return None
    return Splice(task.id, branch, bad, cand.good_path[-1], cand.bad_value, cand.good_value,
                  revision, tuple(replies), len(prefix), state)


def _undo(env: Any, commands: Sequence[str]) -> list[str] | None:
    """The commands that undo ``commands`` (newest first), or None when the game cannot or
    nothing needs undoing. ``game.inverse(command)`` gives one command, "" for a command that
    changed nothing, None for one that cannot be undone."""
    inverse = getattr(env.game, "inverse", None)
    if inverse is None:
        return None
    undo = [inverse(c) for c in reversed(commands)]
    if any(u is None for u in undo):
        return None
    return [u for u in undo if u] or None


def splice_trees(results: Iterable[TreeRecord], env: Environment,
                 config: SpliceConfig | None = None, critic: Critic | None = None, *,
                 counts: Counter | None = None) -> list[Splice]:
    """Validated splices of every tree; unreplayable trees are skipped and counted."""
    config = config or SpliceConfig()
    counts = Counter() if counts is None else counts
    _interactive(env)
    out = []
    for tree in replay_trees(results, env, counts):
        out += splice_tree(tree, config, critic, counts)
    return out


# ----------------------------------------------------------------------------- rows


def dialogue_row(env: Any, splice: Splice) -> Row:
    """TRL's conversational prompt-completion format: ``prompt`` = the chat up to the
    observation after the first bad step, ``completion`` = the revision turn and the good
    continuation (train with ``assistant_only_loss=True`` so the observations between the
    completion's turns carry no loss)."""
    messages = env.messages(splice.state)
    cut = len(messages) - 2 * (len(splice.replies) - splice.trained_from)
    return {"prompt": messages[:cut], "completion": messages[cut:], "task_id": splice.task_id,
            "branch_node": splice.branch, "bad_node": splice.bad, "good_node": splice.good,
            "bad_turns": splice.trained_from, "bad_value": splice.bad_value,
            "good_value": splice.good_value, "revision": splice.revision}


def turn_rows(env: Any, task: Any, replies: Sequence[str], trained_from: int = 0,
              **provenance: Any) -> list[Row]:
    """One SFT row per trained turn, prompted exactly as the search prompts the policy
    (``env.prompt``: its history window and valid actions): the loss is on that turn alone."""
    state = env.reset(task)
    rows = []
    for k, reply in enumerate(replies):
        if k >= trained_from:
            rows.append({"prompt": env.prompt(state),
                         "completion": [{"role": "assistant", "content": reply}],
                         "task_id": task.id, "turn": k, **provenance})
        state = env.step(state, reply).state
    return rows


def splice_turn_rows(env: Any, tasks: dict[str, Any], splices: Iterable[Splice]) -> list[Row]:
    """Per-turn SFT rows of the revision and good continuation of every splice."""
    return [row for s in splices for row in turn_rows(
        env, tasks[s.task_id], s.replies, s.trained_from, kind="splice", bad_turns=s.trained_from)]


def success_turn_rows(results: Iterable[TreeRecord], env: Environment,
                      max_per_tree: int = 1, *, counts: Counter | None = None) -> list[Row]:
    """Per-turn SFT rows of won trajectories (the plain baseline Agent-R compares with): per
    tree up to ``max_per_tree`` distinct wins, shortest first."""
    rows = []
    for tree in replay_trees(results, env, counts):
        wins = sorted((i for i, n in enumerate(tree.nodes) if n.terminal and n.score == 1.0),
                      key=lambda i: (len(tree.path(i)), i))
        for i in wins[:max_per_tree]:
            replies = [tree.action(j) for j in tree.path(i)]
            rows += turn_rows(env, tree.record.task, replies, kind="success", node=i)
    return rows


def splice_rows(results: Iterable[TreeRecord], env: Environment,
                config: SpliceConfig | None = None, critic: Critic | None = None,
                success_per_tree: int = 1) -> tuple[list[Row], list[Row], Counter]:
    """Agent-R's SFT data: (dialogues, per-turn rows, counts). The per-turn rows are the
    revision turns and good continuations of every validated splice plus the turns of up to
    ``success_per_tree`` won trajectories per tree, each prompted as the search prompts."""
    results = list(results)
    counts: Counter = Counter()
    splices = splice_trees(results, env, config, critic, counts=counts)
    tasks = {r.task.id: r.task for r in results}
    dialogues = [dialogue_row(env, s) for s in splices]
    turns = splice_turn_rows(env, tasks, splices)
    turns += success_turn_rows(results, env, success_per_tree, counts=Counter())
    counts["splice_turns"] = sum(row["kind"] == "splice" for row in turns)
    counts["success_turns"] = sum(row["kind"] == "success" for row in turns)
    return dialogues, turns, counts
