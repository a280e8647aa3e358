"""The search drivers: many tasks' trees searched at once, model calls batched across them.

A tree grows in *rounds* (:meth:`TreeSearch._round`): up to ``leaves_per_tree`` leaves selected
(virtual loss keeps them apart), their expansions proposed by the policy, every candidate stepped
in the environment, every new node scored by the critic, then expanded, backed up and released
in the engine. Two schedulers run the rounds (:mod:`.schedule`):

* ``driver="wave"``: every tree's round together; ONE policy call and one critic call per wave
  cover every tree in flight.
* ``driver="async"``: each tree on its own; its next call goes out the moment its last one
  returns, and the backend batches whatever is in flight (continuous batching).
* ``driver="auto"`` (the default): async where the policy declares ``continuous_batching``
  (vLLM, OpenAI-compatible servers) and the environment is not interactive, else wave.

Seeds are local to a tree, so both build the same trees. Finished trees are written at once and
their slots refilled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..contracts import (
    Critic,
    CriticInput,
    Environment,
    Task,
    TestedEnvironment,
    action_text,
    checked_assessments,
    checked_score,
    feedback_prompt,
    final_answer,
    has_answers,
    is_interactive,
)
from ..engine import Forest
from ..errors import RunMismatchError
from ..llm.base import Candidate, GenerationRequest, Policy, continuous_batching
from ..trees import NodeRecord, ResultFile, Status, TreeRecord, TreeStats
from .config import SearchConfig
from .discriminator import (
    Discriminator,
    FinishedTrajectory,
    ValueDiscriminator,
    VisibleTestsDiscriminator,
)
from .diversity import sibling_novelty
from .schedule import Call, CallKind, Overlap, Round, lockstep

log = logging.getLogger(__name__)

CONVERGED_AFTER = 10  # idle waves in a row before a tree counts as converged and ends


@dataclass
class Node:
    """Python payload of one engine node."""

    state: Any
    action: str = ""
    logprob: float = 0.0
    tokens: int = 0
    reward: float = 0.0
    done: bool = False
    critic: float | None = None
    feedback: str | None = None
    disagreement: float | None = None  # a hybrid critic's spread of component values
    explanation: str | None = None  # a judge's reasoning
    components: dict[str, float] | None = None  # a hybrid critic's value per component
    answer: str | None = None
    score: float | None = None
    local: int = 0  # creation order within its own tree (engine ids interleave across trees)


@dataclass
class Tree:
    """Book-keeping of one task's tree in the forest."""

    task: Task
    slot: int
    started: float = field(default_factory=time.perf_counter)
    tokens: int = 0
    expansions: int = 0
    waves: int = 0
    solved: bool = False
    idle_waves: int = 0  # consecutive waves whose descents all ended on finished states
    counts: Counter = field(default_factory=Counter)
    size: int = 1  # nodes so far, the root included
    first_error: str | None = None  # the first exception the environment raised on a step

    def adopt(self, node: Node) -> Node:
        """Number ``node`` as this tree's next one."""
        node.local, self.size = self.size, self.size + 1
        return node


class TreeSearch:
    """Search tasks with ``policy`` in ``environment``, valuing nodes with ``critic``."""

    def __init__(
        self,
        environment: Environment,
        policy: Policy,
        critic: Critic,
        config: SearchConfig | None = None,
        discriminator: Discriminator | None = None,
    ) -> None:
        self.env = environment
        self.policy = policy
        self.critic = critic
        self.config = config or SearchConfig()
        self.discriminator = discriminator or ValueDiscriminator()

    # ------------------------------------------------------------------ public entry points

    @property
    def driver(self) -> str:
        """The driver this search runs: ``config.driver``, with ``"auto"`` resolved to async
        where the policy batches continuously and the environment can be stepped from several
        threads (and no cohorts are asked for), else wave."""
        driver = self.config.driver
        if driver == "auto":
            driver = "async" if (continuous_batching(self.policy) and self.config.cohorts == 1
                                 and not is_interactive(self.env)) else "wave"
        return driver

    def run(
        self,
        tasks: Iterable[Task],
        results: ResultFile | None = None,
        on_result: Callable[[TreeRecord], Any] | None = None,
    ) -> Iterator[TreeRecord]:
        """Yield one :class:`TreeRecord` per task as its tree finishes.

        With ``results``, tasks already in that file are skipped (resume) and each finished
        tree is appended before it is yielded.
        """
        done = results.done() if results is not None else {}
        pending = (task for task in tasks if not _already_done(task, done))
        cfg = self.config
        if self.driver == "async":
            finished = self._grow_async(pending, cfg.max_trees_in_flight)
        elif cfg.cohorts > 1:
            finished = self._grow_cohorts(pending, cfg.cohorts)
        else:
            finished = self._grow(pending, cfg.max_trees_in_flight)
        for result in finished:
            if results is not None:
                results.append(result)
            if on_result is not None:
                on_result(result)
            yield result

    def _grow(self, pending: Iterator[Task], capacity: int,
              stop: threading.Event | None = None) -> Iterator[TreeRecord]:
        """The wave driver: up to ``capacity`` trees in one forest, refilled from ``pending``;
        every tree's round advances together, each kind of call merged into one batched call.
        Yield each tree as it finishes."""
        forest = Forest(self.config.engine)
        trees: dict[int, Tree] = {}
        while stop is None or not stop.is_set():
            lockstep([self._plant(forest, tree)
                      for tree in self._refill(forest, trees, pending, capacity)], self._work)
            if not trees:
                return
            lockstep([self._round(forest, tree) for tree in trees.values()], self._work)
            for slot in [s for s, tree in trees.items() if self._finished(tree)]:
                yield self._retire(forest, trees, slot)

    def _grow_async(self, pending: Iterator[Task], capacity: int) -> Iterator[TreeRecord]:
        """The asynchronous driver: up to ``capacity`` trees in flight, each advancing on its
        own. A tree's call (its leaves' expansions, its environment steps, its critic work) goes
        out the moment its previous one returns, so the backend batches whatever is in flight
        instead of waiting for the slowest leaf of a wave. A tree's rounds are the wave driver's
        rounds, so the trees are the same."""
        self._refuse_threads("driver='async'", "use the wave driver (driver='wave')")
        forest = Forest(self.config.engine)
        trees: dict[int, Tree] = {}
        overlap = Overlap(self._work)
        ended: list[Tree] = []  # trees whose round has just ended
        try:
            while True:
                for tree in self._refill(forest, trees, pending, capacity):
                    if not overlap.start(tree, self._plant(forest, tree)):
                        ended.append(tree)
                if not ended:
                    if not trees:
                        return
                    ended.append(overlap.next_ended())
                tree = ended.pop()
                while not self._finished(tree):
                    if overlap.start(tree, self._round(forest, tree)):
                        break  # rounds that select nothing (converging) end at once: next
                else:
                    yield self._retire(forest, trees, tree.slot)
        finally:  # stopped early (Ctrl-C, an error, a consumer that quit): calls out finish
            if overlap.in_flight:
                log.warning("waiting for %d model/critic calls in flight to return "
                            "(Ctrl-C again to quit at once)", overlap.in_flight)
                overlap.drain()

    def _grow_cohorts(self, pending: Iterator[Task], cohorts: int) -> Iterator[TreeRecord]:
        """Overlap: ``cohorts`` forests grown by as many threads, sharing the task queue and the
        policy. While one cohort steps its environment, backs up or waits for its critic, the
        others' model calls keep the engine busy; a backend that batches across callers (vLLM,
        an OpenAI-compatible server) decodes them together. Trees do not depend on which
        cohort grew them (their seeds are tree-local), so the results are the same."""
        self._refuse_threads("cohorts > 1", "use cohorts=1")
        shared, out = _SharedTasks(pending), queue.Queue()
        stop = threading.Event()
        capacity = max(1, self.config.max_trees_in_flight // cohorts)

        def grow() -> None:
            try:
                for result in self._grow(shared, capacity, stop):
                    out.put(result)
            except BaseException as err:  # handed to the consumer, which re-raises it
                out.put(err)
            finally:
                out.put(None)

        threads = [threading.Thread(target=grow, name=f"cohort-{i}", daemon=True)
                   for i in range(cohorts)]
        for thread in threads:
            thread.start()
        try:
            running = cohorts
            while running:
                item = out.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:  # an error, or a consumer that stopped early: let the others wind down
            stop.set()
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------------ one round of a tree

    def _round(self, forest: Forest, tree: Tree) -> Round:
        """Up to ``leaves_per_tree`` leaves of ``tree`` selected (virtual loss keeps them
        apart), expanded by the policy, stepped in the environment, scored by the critic,
        backed up and released. Outside work is yielded as :class:`Call` s."""
        cfg = self.config
        # simulations count expansions (model calls); revisiting finished states is free
        budget = np.zeros(forest.num_trees, np.int64)
        budget[tree.slot] = min(cfg.leaves_per_tree, cfg.simulations - tree.expansions)
        leaves = forest.select(cfg.leaves_per_tree, trees=[tree.slot], budget=budget).nodes
        if len(leaves) == 0:  # every descent ended on a finished state: the search converges
            tree.idle_waves += 1
            return
        tree.idle_waves = 0
        leaves = leaves.tolist()
        proposals = yield Call("propose", [self._request(forest, leaf, tree) for leaf in leaves])
        tree.expansions += len(leaves)
        tree.tokens += sum(c.num_tokens for candidates in proposals for c in candidates)
        broods = yield Call("steps", [
            (tree, forest.payload[leaf].state, self._actions(forest, leaf),
             int(forest.nodes.depth[leaf]) + 1, candidates)
            for leaf, candidates in zip(leaves, proposals, strict=True)])
        children = [(leaf, kid) for leaf, kids in zip(leaves, broods, strict=True)
                    for kid in kids]
        assessments = yield Call("assess", [CriticInput(tree.task, self.env, kid.state, kid.done)
                                            for _, kid in children])
        for (_, kid), assessment in zip(children, assessments, strict=True):
            kid.critic, kid.feedback = assessment.value, assessment.feedback
            kid.disagreement = assessment.disagreement
            kid.explanation = assessment.explanation
            kid.components = dict(assessment.components) if assessment.components else None
            tree.tokens += assessment.tokens
        ids = forest.expand(
            leaves, [len(kids) for kids in broods],
            [self._log_prior(kid) for _, kid in children], logits=True,
            terminal=[kid.done for _, kid in children],
            reward=[kid.reward for _, kid in children]).tolist()
        for node_id, (_, kid) in zip(ids, children, strict=True):
            forest.payload[node_id] = tree.adopt(kid)
        if cfg.engine.diversity_weight:
            self._novelty(forest, {leaf for leaf, _ in children})
        forest.backup(ids, [kid.critic for _, kid in children])
        yield from self._graft_rollouts(forest, tree, [
            (node_id, assessment.completions)
            for node_id, assessment in zip(ids, assessments, strict=True)])
        barren = [leaf for leaf, kids in zip(leaves, broods, strict=True) if not kids]
        dead_ends = [leaf for leaf in barren if forest.nodes.num_children[leaf] == 0]
        forest.release(leaves)
        if dead_ends:  # no usable step came back: never select these leaves again
            forest.mark_terminal(dead_ends)
            forest.backup(dead_ends, np.zeros(len(dead_ends)))
        # widening that found nothing new: the policy has no other step to offer here
        forest.close([leaf for leaf in barren if leaf not in dead_ends])
        tree.waves += 1

    def _plant(self, forest: Forest, tree: Tree) -> Round:
        """A new tree's first round: its root assessed by the critic and backed up."""
        root = int(forest.roots[tree.slot])
        [assessment] = yield Call("assess", [
            CriticInput(tree.task, self.env, forest.payload[root].state, False)])
        forest.payload[root].critic = assessment.value
        forest.backup([root], [assessment.value])

    def _work(self, kind: CallKind, items: list) -> list:
        """Run one call of a round (or the merged calls of many): policy, environment, critic."""
        if kind == "propose":
            return self.policy.propose(items)
        if kind == "steps":
            return [self._children(*item) for item in items]
        if kind == "assess":
            return checked_assessments(self.critic, items)
        return [self._score(state, tree) for state, tree in items]

    def _score(self, state: Any, tree: Tree) -> float:
        """Data mode: the verifier's score of a finished state (the tree is solved at 1.0)."""
        score = checked_score(self.env, state, tree.task)
        tree.solved |= score == 1.0
        return score

    def _novelty(self, forest: Forest, parents: Iterable[int]) -> None:
        """How unlike its siblings each child of ``parents`` is (SWE-Search's diversity)."""
        for parent in parents:
            kids = forest.children(parent)
            forest.set_novelty(kids, sibling_novelty([forest.payload[k].action
                                                      for k in kids.tolist()]))

    def _request(self, forest: Forest, leaf: int, tree: Tree) -> GenerationRequest:
        cfg = self.config
        # a seed per (run seed, task, node, visit) keeps a tree independent of the trees that
        # share its waves, so a resumed run regrows it exactly (and hits the response cache)
        key = (f"{cfg.seed}/{tree.task.id}/{forest.payload[leaf].local}/"
               f"{forest.nodes.num_children[leaf]}")
        state = forest.payload[leaf].state
        feedback = self._feedback(forest, leaf) if cfg.sibling_feedback else None
        prompt = feedback_prompt(self.env, state, feedback)
        return GenerationRequest(
            prompt=prompt, n=cfg.expand_n,
            max_tokens=cfg.max_step_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            stop=(self.env.step_delimiter,), seed=zlib.crc32(key.encode()))

    def _feedback(self, forest: Forest, leaf: int) -> str | None:
        """The feedback block on ``leaf``'s judged children, newest first (None if none)."""
        cfg = self.config
        judged = [forest.payload[c] for c in forest.children(leaf).tolist()[::-1]
                  if forest.payload[c].feedback]
        if not judged:
            return None
        lines = [cfg.feedback_line.format(action=kid.action, value=kid.critic or 0.0,
                                          feedback=" ".join(kid.feedback.split()))
                 for kid in judged[:cfg.sibling_feedback]]
        return "\n".join([cfg.feedback_header, *lines])

    def _actions(self, forest: Forest, leaf: int) -> set[str]:
        """The steps ``leaf`` already has (a widened node must not get one twice)."""
        return {forest.payload[c].action for c in forest.children(leaf).tolist()}

    def _children(self, tree: Tree, state: Any, seen: set[str], depth: int,
                  candidates: list[Candidate]) -> list[Node]:
        """Step the environment from ``state`` for each distinct, non-empty candidate (new
        nodes at ``depth``); count the rest. Finished states are scored in data mode."""
        kids = []
        if candidates and all(c.finish_reason == "prompt_too_long" for c in candidates):
            tree.counts["context_overflow"] += 1  # this leaf's prompt leaves no room to write
            return kids
        for cand in candidates:
            action = action_text(self.env, cand.text)
            if not action:
                tree.counts["empty_steps"] += 1
                continue
            if action in seen:
                tree.counts["duplicate_steps"] += 1
                continue
            seen.add(action)
            try:
                step = self.env.step(state, action)
            except Exception as err:  # a crashing environment costs one branch, not the run
                tree.counts["environment_errors"] += 1
                tree.first_error = tree.first_error or f"{type(err).__name__}: {err}"
                log.info("%s: step failed on task %s", self.env.name, tree.task.id,
                         exc_info=True)
                continue
            if step.info.get("invalid_action"):  # an agent's reply the game would not take
                tree.counts["invalid_actions"] += 1
            done = step.done or depth >= self.config.max_depth
            kid = Node(step.state, action, cand.logprob, cand.num_tokens, step.reward, done,
                       answer=final_answer(self.env, step.state) if done else None)
            if done and self.config.mode == "data":
                kid.score = self._score(kid.state, tree)
            kids.append(kid)
        return kids

    def _graft_rollouts(self, forest: Forest, tree: Tree,
                        rollouts: list[tuple[int, Sequence[str]]]) -> Round:
        """Keep the critic's finished rollouts as tree nodes, as rStar-Math does: each one
        becomes a path below the node it started from (reusing steps already there), and its
        finished state is judged by the critic (one batched call) and backed up once. In data
        mode a verified rollout is a verified solution in the tree."""
        ends = [end for node_id, texts in rollouts for text in texts
                if (end := self._graft(forest, node_id, tree, text)) is not None]
        if not ends:
            return
        kids: list[Node] = [forest.payload[end] for end in ends]
        assessments = yield Call("assess", [CriticInput(tree.task, self.env, kid.state, True)
                                            for kid in kids])
        for kid, assessment in zip(kids, assessments, strict=True):
            kid.critic = assessment.value
        if self.config.mode == "data":
            scores = yield Call("score", [(kid.state, tree) for kid in kids])
            for kid, score in zip(kids, scores, strict=True):
                kid.score = score
        forest.backup(ends, [a.value for a in assessments])

    def _graft(self, forest: Forest, start: int, tree: Tree, text: str) -> int | None:
        """Add the steps of ``text`` below ``start``; the new finished node, or None when the
        path was already in the tree or the text does not end the episode cleanly."""
        node = start
        for line in (action_text(self.env, ln) for ln in text.split(self.env.step_delimiter)):
            if not line:
                continue
            if forest.is_terminal(node):
                return None
            same = [c for c in forest.children(node).tolist()
                    if forest.payload[c].action == line]
            if same:
                node = same[0]
                continue
            parent: Node = forest.payload[node]
            try:
                step = self.env.step(parent.state, line)
            except Exception:  # the critic played this text already; be safe all the same
                return None
            depth = int(forest.nodes.depth[node]) + 1
            done = step.done or depth >= self.config.max_depth
            # grafted steps carry no prior mass: their backed-up values speak for them
            [node] = forest.expand([node], [1], [-np.inf], logits=True, terminal=[done],
                                   reward=[step.reward]).tolist()
            forest.payload[node] = tree.adopt(Node(
                step.state, line, reward=step.reward, done=done,
                answer=final_answer(self.env, step.state) if done else None))
            tree.counts["grafted_steps"] += 1
            if done:
                return node
        return None  # nothing new, or unfinished text: any new nodes stay unvisited leaves

    def _log_prior(self, kid: Node) -> float:
        """MCTS-DPO's step prior: the sequence log-probability over tokens^power."""
        return kid.logprob / max(kid.tokens, 1) ** self.config.prior_length_power


    # ------------------------------------------------------------------ trees in flight

    def _refill(self, forest: Forest, trees: dict[int, Tree], pending: Iterator[Task],
                capacity: int) -> list[Tree]:
        """Start trees for up to ``capacity - len(trees)`` new tasks (roots not yet assessed:
        :meth:`_plant` does that)."""
        new = [task for _, task in zip(range(capacity - len(trees)), pending, strict=False)]
        if not new:
            return []
        slots = forest.add_trees(len(new))
        for slot, root, task in zip(slots.tolist(), forest.roots[slots].tolist(), new,
                                    strict=True):
            forest.payload[root] = Node(self.env.reset(task))
            trees[slot] = Tree(task, slot)
        return [trees[slot] for slot in slots.tolist()]

    def _finished(self, tree: Tree) -> bool:
        cfg = self.config
        return (tree.expansions >= cfg.simulations
                or tree.idle_waves >= CONVERGED_AFTER
                or (cfg.max_tokens is not None and tree.tokens >= cfg.max_tokens)
                or (cfg.max_seconds is not None
                    and time.perf_counter() - tree.started >= cfg.max_seconds)
                or (cfg.mode == "data" and cfg.stop_when_solved and tree.solved))

    def _retire(self, forest: Forest, trees: dict[int, Tree], slot: int) -> TreeRecord:
        """The record of a finished tree, whose Python payloads are then freed (its engine
        nodes stay, 61 B each)."""
        result = self._result(forest, trees.pop(slot))
        for node in forest.tree_nodes(slot).tolist():
            forest.payload.pop(node, None)
        return result

    def _refuse_threads(self, what: str, instead: str) -> None:
        """Interactive environments hold one simulator each: never step them from threads."""
        if is_interactive(self.env):
            raise ValueError(f"{what} steps the environment from several threads; interactive "
                             f"agent environments hold simulators: {instead}")

    # ------------------------------------------------------------------ the record

    def _result(self, forest: Forest, tree: Tree) -> TreeRecord:
        ids = forest.tree_nodes(tree.slot).tolist()
        local = {node: i for i, node in enumerate(ids)}
        a = forest.nodes
        values = forest.mean_value(np.asarray(ids))
        nodes = []
        for node, value in zip(ids, values.tolist(), strict=True):
            p: Node = forest.payload[node]
            nodes.append(NodeRecord(
                parent=local.get(int(a.parent[node])), action=p.action, depth=int(a.depth[node]),
                visits=int(a.visits[node]), value=None if np.isnan(value) else value,
                prior=float(a.prior[node]), logprob=p.logprob, tokens=p.tokens,
                reward=p.reward, terminal=bool(forest.is_terminal(node)), critic=p.critic,
                feedback=p.feedback, disagreement=p.disagreement, answer=p.answer,
                score=p.score, explanation=p.explanation, components=p.components))
        answer = choose_answer(nodes, self.config.mode)
        chosen = self._discriminate(forest, tree, ids, nodes)
        if chosen is not None:
            answer = nodes[chosen].answer
        if self.config.mode == "data":
            solved = tree.solved
        else:  # judged after the search, only for reporting
            finals = [chosen] if chosen is not None else [
                i for i, n in enumerate(nodes) if n.answer == answer and n.terminal]
            unjudgeable = (not finals or (has_answers(self.env) and (
                answer is None or tree.task.reference is None)))
            solved = None if unjudgeable else checked_score(
                self.env, forest.payload[ids[finals[0]]].state, tree.task) == 1.0
        stats = TreeStats(nodes=len(nodes), expansions=tree.expansions, tokens=tree.tokens,
                          waves=tree.waves, seconds=time.perf_counter() - tree.started,
                          chosen_node=chosen, counts=dict(tree.counts),
                          first_error=tree.first_error)
        return TreeRecord(tree.task, self.config.mode, tuple(nodes), answer, solved, stats,
                          _status(tree))

    def _discriminate(self, forest: Forest, tree: Tree, ids: list[int],
                      nodes: list[NodeRecord]) -> int | None:
        """Inference mode: the finished trajectory the discriminator picks (local id), when the
        environment has no answers to vote on, runs visible tests (code), or a discriminator
        other than the tree's own statistics is asked for; None otherwise."""
        if self.config.mode != "inference":
            return None
        discriminator = self.discriminator
        if isinstance(discriminator, ValueDiscriminator):
            if isinstance(self.env, TestedEnvironment):  # code: the visible tests decide
                discriminator = VisibleTestsDiscriminator()
            elif has_answers(self.env):  # the visit-weighted vote over answers decides
                return None
        finished = [i for i, node_id in enumerate(ids) if forest.payload[node_id].done]
        if not finished:
            return None
        candidates = [FinishedTrajectory(tree.task, self.env, forest.payload[ids[i]].state, i,
                                         nodes[i].value, nodes[i].visits, nodes[i].critic,
                                         *_path_logprob(nodes, i))
                      for i in finished]
        return finished[discriminator.choose(candidates)]


class _SharedTasks:
    """An iterator several cohorts draw tasks from (each task goes to exactly one)."""

    def __init__(self, tasks: Iterator[Task]) -> None:
        self._tasks = tasks
        self._lock = threading.Lock()

    def __iter__(self) -> _SharedTasks:
        return self

    def __next__(self) -> Task:
        with self._lock:
            return next(self._tasks)


def _path_logprob(nodes: Sequence[NodeRecord], node: int | None) -> tuple[float | None, int]:
    """(sum of the step log-probabilities, tokens) from the root to ``node``; None when a step
    was grafted from a rollout (no tokens of its own: its probability is unknown)."""
    total, tokens = 0.0, 0
    while node is not None:
        record = nodes[node]
        if record.parent is not None:
            if record.tokens <= 0:
                return None, 0
            total += record.logprob
            tokens += record.tokens
        node = record.parent
    return total, tokens


def choose_answer(nodes: Sequence[NodeRecord], mode: str) -> str | None:
    """The tree's answer: in data mode the first verified one; otherwise (and as a fallback)
    the answer whose terminal nodes gathered the most visits, ties to the higher mean value."""
    if mode == "data":
        for node in nodes:
            if node.score == 1.0:
                return node.answer
    votes: dict[str, list[float]] = {}
    for node in nodes:
        if node.terminal and node.answer is not None:
            tally = votes.setdefault(node.answer, [0.0, 0.0])
            tally[0] += node.visits
            tally[1] = max(tally[1], node.value or 0.0)
    if not votes:
        return None
    return max(votes, key=lambda answer: tuple(votes[answer]))


def _status(tree: Tree) -> Status:
    """How a tree's search ended: a root that could never be expanded, because its prompt
    leaves no room in the model's context or because every step raised, is not "finished"."""
    if tree.size > 1:
        return "finished"
    if tree.counts["context_overflow"]:
        return "context_overflow"
    if tree.counts["environment_errors"]:
        return "environment_error"
    return "finished"


def _already_done(task: Task, done: dict[str, str]) -> bool:
    """Whether ``task``'s tree is in the run file; refused if that tree was grown for a task
    with the same id but other content (the dataset changed under the run)."""
    if task.id not in done:
        return False
    if done[task.id] != task.fingerprint:
        raise RunMismatchError(
            f"the run file holds a tree for task {task.id!r} whose problem or reference differs "
            "from this task's (the task source changed); search into a new --out folder")
    return True
