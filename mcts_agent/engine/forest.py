"""`Forest`: many search trees in one compiled node pool, driven a wave at a time from Python.

A wave, as the LLM driver runs it::

    leaves = forest.select(k=8)                 # up to 8 distinct leaves per tree, virtual loss on
    ...                                         # one batched model call for every leaf
    kids = forest.expand(leaves.nodes, counts, logprobs, logits=True)
    forest.backup(kids, child_values)           # one visit per evaluated child
    forest.release(leaves.nodes)                # virtual loss off

or AlphaZero-style (evaluate the leaf itself, create its children from priors):
``forest.apply(leaves.nodes, Evaluation(priors, values))``.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np

from . import kernels
from .config import EngineConfig
from .storage import (
    BYTES_PER_NODE,
    CLOSED,
    EDGES_USED,
    NO_NODE,
    PENDING,
    SCATTERED,
    SIZE,
    STATE_BYTES,
    TERMINAL,
    WIDEST,
    NodeArrays,
    allocate,
    grow,
    stored_fields,
)

FORMAT_VERSION = 2  # 1: children as linked sibling lists (still read)

EVALUATION_ERRORS = {
    kernels.BAD_VALUE: "values must be finite (found NaN or inf); score unknown states "
                       "explicitly, e.g. with a neutral value",
    kernels.BAD_REWARD: "rewards must be finite (found NaN or inf)",
    kernels.NAN_PRIOR: "priors contain NaN",
    kernels.POSINF_LOGIT: "log-prior of +inf: pass finite log-probabilities (or -inf to omit)",
    kernels.BAD_PROBABILITY: "probabilities must be finite and >= 0 (or pass logits=True)",
}


def raise_for(code: int) -> None:
    """Turn a kernel's error code into the ValueError it stands for."""
    if code in EVALUATION_ERRORS:
        raise ValueError(EVALUATION_ERRORS[code])
    if code < 0:
        raise RuntimeError(f"engine kernel failed with code {code}")


@dataclass(frozen=True)
class Selection:
    """Leaves chosen by one :meth:`Forest.select` call; ``nodes[i]`` belongs to ``trees[i]``."""

    nodes: np.ndarray
    trees: np.ndarray

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass
class Evaluation:
    """What a model says about a batch of leaves (AlphaZero-style).

    ``priors[i, j]`` is the prior of the leaf's j-th new child: a probability, or a log-probability
    when the evaluation is applied with ``logits=True``; zero probability or a non-finite logit
    means "no such action". ``values[i]`` is the leaf's value; ``terminal[i]`` marks leaves that
    end an episode (never expanded); ``rewards[i]`` is the reward on the edge into the leaf.
    """

    priors: np.ndarray
    values: np.ndarray
    terminal: np.ndarray | None = None
    rewards: np.ndarray | None = None


def _index_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a 1-D array of integers, got {array.dtype} "
                        f"with shape {array.shape}")
    return array.astype(np.int64, copy=False)


def _check_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite (found NaN or inf); score unknown states "
                         "explicitly, e.g. with a neutral value")


def _check_weights(weights: np.ndarray, logits: bool) -> None:
    """Priors: log-probabilities may be -inf (no such action), probabilities must be >= 0."""
    if np.isnan(weights).any():
        raise ValueError("priors contain NaN")
    if logits and np.isposinf(weights).any():
        raise ValueError("log-prior of +inf: pass finite log-probabilities (or -inf to omit)")
    if not logits and (~np.isfinite(weights) | (weights < 0)).any():
        raise ValueError("probabilities must be finite and >= 0 (or pass logits=True)")


class Forest:
    """Independent search trees sharing one growable structure-of-arrays node pool.

    Node ids are stable for the forest's life; :attr:`payload` maps a node id to any Python
    object (step text, environment snapshot, critic feedback …). Storage grows on demand
    (doubling); one node costs :data:`~mcts_agent.engine.storage.BYTES_PER_NODE` bytes.
    """

    def __init__(
        self, config: EngineConfig | None = None, num_trees: int = 0, capacity: int = 1024
    ) -> None:
        self.config = config or EngineConfig()
        self._params = self.config.kernel_params()
        self.nodes: NodeArrays = allocate(capacity, state=self.config.node_state)
        self.roots = np.zeros(0, np.int64)
        self.payload: dict[int, Any] = {}
        if num_trees:
            self.add_trees(num_trees)

    # ------------------------------------------------------------------ size and growth

    @property
    def num_trees(self) -> int:
        return len(self.roots)

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.meta[SIZE])

    @property
    def nbytes(self) -> int:
        """Bytes of node storage in use, edges blocks and evaluator state included (capacity
        may be up to twice this)."""
        per_node = BYTES_PER_NODE + (STATE_BYTES if self.config.node_state else 0)
        return self.num_nodes * per_node + int(self.nodes.meta[EDGES_USED]) * 4

    def reserve(self, extra_nodes: int, extra_edges: int = 0) -> None:
        """Make room for ``extra_nodes`` more nodes and ``extra_edges`` more slots of the edges
        table (done automatically by every method)."""
        self.nodes = grow(self.nodes, self.num_nodes + int(extra_nodes),
                          int(self.nodes.meta[EDGES_USED]) + int(extra_edges))

    def add_trees(self, count: int = 1) -> np.ndarray:
        """Add ``count`` trees, each a lone unevaluated root; returns their tree ids."""
        self.reserve(count)
        start = self.num_nodes
        ids = np.arange(start, start + count, dtype=np.int64)
        kernels.clean(self.nodes, self.nodes.meta, count, len(self.nodes.parent))
        self.nodes.meta[SIZE] += count
        first_tree = self.num_trees
        self.roots = np.concatenate([self.roots, ids])
        return np.arange(first_tree, first_tree + count, dtype=np.int64)

    # ------------------------------------------------------------------ the wave

    def select(
        self, k: int = 1, trees: Iterable[int] | None = None, budget: np.ndarray | None = None
    ) -> Selection:
        """Select up to ``k`` distinct leaves per tree, kept apart by virtual loss.

        A leaf is a node with no children (or, with progressive widening, one that may take
        more). Each tree makes up to ``k`` descents; one that ends on a terminal node backs up
        its value immediately (no leaf for it, so a tree may return fewer than ``k`` leaves).
        ``budget`` (int64, one entry per tree of the forest, decremented in place) caps the
        simulations (selected leaves + terminal backups) each tree may spend; by default each
        tree spends at most ``k`` in this call. Call :meth:`release` on the leaves once they
        are updated.
        """
        tree_ids = self._trees(trees)
        if budget is None:
            budget = np.zeros(self.num_trees, np.int64)
            budget[tree_ids] = k
        elif (not isinstance(budget, np.ndarray) or budget.dtype != np.int64
              or budget.shape != (self.num_trees,)):
            raise ValueError(f"budget must be an int64 numpy array of shape ({self.num_trees},) "
                             f"(one entry per tree, spent in place); got {budget!r:.80}")
        out_leaf = np.empty(len(tree_ids) * k, np.int64)
        out_tree = np.empty_like(out_leaf)
        n = kernels.select(self.nodes, self._params, self.roots, tree_ids, int(k), budget,
                           out_leaf, out_tree)
        return Selection(out_leaf[:n], out_tree[:n])

    def expand(
        self,
        parents: Sequence[int] | np.ndarray,
        counts: Sequence[int] | np.ndarray,
        priors: Sequence[float] | np.ndarray | None = None,
        *,
        logits: bool = False,
        terminal: np.ndarray | None = None,
        reward: np.ndarray | None = None,
    ) -> np.ndarray:
        """Give ``parents[i]`` ``counts[i]`` new children; returns the new ids (flat, in order).

        ``priors``/``terminal``/``reward`` are flat, one entry per new child. Priors are
        probabilities (or log-probabilities with ``logits=True``, e.g. summed token
        log-probabilities); each parent's children are renormalised to sum to 1. Without priors
        every child weighs the same.
        """
        parents = _index_array(parents, "parents")
        counts = _index_array(counts, "counts")
        if counts.shape != parents.shape or (counts < 0).any():
            raise ValueError("counts must give a non-negative child count for every parent")
        self._check_nodes(parents)
        if (self.nodes.flags[parents] & TERMINAL).any():
            raise ValueError("terminal nodes cannot be expanded")
        total = int(counts.sum())
        weights = np.zeros(total) if priors is None else np.asarray(priors, np.float64)
        if priors is None:
            logits = True
        terminal = np.zeros(total, bool) if terminal is None else np.asarray(terminal, bool)
        reward = np.zeros(total) if reward is None else np.asarray(reward, np.float64)
        for name, arr in (("priors", weights), ("terminal", terminal), ("reward", reward)):
            if arr.shape != (total,):
                raise ValueError(f"{name} needs one entry per new child ({total}), got {arr.shape}")
        _check_weights(weights, logits)
        _check_finite(reward, "rewards")
        self.reserve(total, kernels.edges_needed(self.nodes.num_children[parents], counts))
        children = np.empty(total, np.int64)
        if not logits:
            with np.errstate(divide="ignore"):
                weights = np.log(weights)
        kernels.expand(self.nodes, parents, counts, weights, terminal, reward, children)
        return children

    def backup(
        self, nodes: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
    ) -> None:
        """Back up ``values[i]`` from ``nodes[i]`` to its root: one visit per node on the way."""
        nodes = _index_array(nodes, "nodes")
        values = np.asarray(values, np.float64)
        if values.shape != nodes.shape:
            raise ValueError(f"one value per node: {len(nodes)} nodes, values {values.shape}")
        _check_finite(values, "values")
        self._check_nodes(nodes)
        kernels.backup(self.nodes, self._params, nodes, values)

    def release(self, leaves: Sequence[int] | np.ndarray) -> None:
        """Remove the virtual loss :meth:`select` put on ``leaves`` (once per selected leaf)."""
        leaves = _index_array(leaves, "leaves")
        self._check_nodes(leaves)
        kernels.release(self.nodes, leaves)

    def apply(self, leaves: np.ndarray, evaluation: Evaluation, *, logits: bool = False) -> None:
        """AlphaZero-style update: expand each leaf from its priors, back up its value, release."""
        leaves = _index_array(leaves, "leaves")
        self._check_nodes(leaves)
        n = len(leaves)
        priors = np.ascontiguousarray(evaluation.priors, np.float64)
        if priors.ndim != 2 or priors.shape[0] != n:
            raise ValueError(f"priors must be ({n}, num_actions), got {priors.shape}")
        values, terminal, rewards = self._evaluation_arrays(evaluation, n)
        self._reserve_for(leaves, priors.shape[1])
        raise_for(kernels.apply_evaluations(self.nodes, self._params, leaves, priors, logits,
                                            values, terminal, rewards))

    def _evaluation_arrays(
        self, evaluation: Evaluation, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, terminal flags and rewards of an evaluation of ``n`` leaves (shapes checked;
        the kernels check the numbers)."""
        values = np.ascontiguousarray(evaluation.values, np.float64)
        terminal = np.zeros(n, bool) if evaluation.terminal is None else evaluation.terminal
        rewards = np.zeros(n) if evaluation.rewards is None else evaluation.rewards
        terminal = np.ascontiguousarray(terminal, bool)
        rewards = np.ascontiguousarray(rewards, np.float64)
        if values.shape != (n,) or terminal.shape != (n,) or rewards.shape != (n,):
            raise ValueError(f"values, terminal and rewards need one entry per leaf ({n})")
        return values, terminal, rewards

    def _reserve_for(self, leaves: np.ndarray, width: int) -> None:
        """Room for up to ``width`` new children of every leaf."""
        counts = np.full(len(leaves), width, np.int64)
        self.reserve(len(leaves) * width,
                     kernels.edges_needed(self.nodes.num_children[leaves], counts))

    def mark_terminal(self, nodes: Sequence[int] | np.ndarray) -> None:
        """Make childless ``nodes`` terminal (e.g. a dead end where no valid action came back)."""
        nodes = _index_array(nodes, "nodes")
        self._check_nodes(nodes)
        if (self.nodes.num_children[nodes] > 0).any():
            raise ValueError("only childless nodes can become terminal")
        self.nodes.flags[nodes] |= TERMINAL

    def set_novelty(
        self, nodes: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
    ) -> None:
        """Set how unlike its siblings each node is (in [0, 1]; 1 = unlike all of them).

        Selection adds ``config.diversity_weight · novelty`` to a child's score, so a search can
        favour branches that try something different (SWE-Search's diversity term). New nodes
        start at 0; see :func:`mcts_agent.search.diversity.novelty` for one way to compute it.
        """
        nodes = _index_array(nodes, "nodes")
        values = np.asarray(values, np.float64)
        if values.shape != nodes.shape:
            raise ValueError(f"one value per node: {len(nodes)} nodes, values {values.shape}")
        _check_finite(values, "novelty")
        if ((values < 0) | (values > 1)).any():
            raise ValueError("novelty lies in [0, 1]")
        self._check_nodes(nodes)
        self.nodes.novelty[nodes] = values.astype(np.float32)

    def close(self, nodes: Sequence[int] | np.ndarray) -> None:
        """Forbid more children (progressive widening) for ``nodes``: their actions are complete."""
        nodes = _index_array(nodes, "nodes")
        self._check_nodes(nodes)
        self.nodes.flags[nodes] |= CLOSED

    # ------------------------------------------------------------------ reading trees

    def children(self, node: int) -> np.ndarray:
        """Child ids of ``node`` in action order."""
        self._check_nodes(node)
        a = self.nodes
        first, count = int(a.first_child[node]), int(a.num_children[node])
        if a.flags[node] & SCATTERED:
            return a.edges[first:first + count].astype(np.int64)
        return np.arange(first, first + count, dtype=np.int64)

    def mean_value(self, nodes: np.ndarray | int) -> np.ndarray:
        """Mean backed-up value of ``nodes`` (NaN where never visited)."""
        self._check_nodes(nodes)
        n = self.nodes.visits[nodes].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.nodes.value_sum[nodes] / n, np.nan)

    def q_values(self, nodes: np.ndarray | int) -> np.ndarray:
        """Q seen from the parent: edge reward + discount · mean value (NaN where unvisited)."""
        return self.nodes.reward[nodes] + self.config.discount * self.mean_value(nodes)

    def is_terminal(self, nodes: np.ndarray | int) -> np.ndarray:
        return (self.nodes.flags[nodes] & TERMINAL) != 0

    def tree_nodes(self, tree: int) -> np.ndarray:
        """Every node of ``tree``, parents before children."""
        order = [int(self.roots[tree])]
        for node in order:
            order.extend(self.children(node).tolist())
        return np.asarray(order, np.int64)

    def tree_of(self, node: int) -> int:
        """The tree ``node`` belongs to."""
        self._check_nodes(node)
        while self.nodes.parent[node] != NO_NODE:
            node = int(self.nodes.parent[node])
        return int(np.searchsorted(self.roots, node))

    def path(self, node: int) -> list[int]:
        """Node ids from the root down to ``node``."""
        self._check_nodes(node)
        out = [int(node)]
        while self.nodes.parent[out[-1]] != NO_NODE:
            out.append(int(self.nodes.parent[out[-1]]))
        return out[::-1]

    def root_visits(self, tree: int) -> np.ndarray:
        """Visit counts of the root's children, in action order."""
        return self.nodes.visits[self.children(int(self.roots[tree]))].astype(np.int64)

    def root_policy(self, tree: int, temperature: float = 1.0) -> np.ndarray:
        """The visit distribution at the root, ∝ N^(1/T): AlphaZero's policy target.

        ``temperature=0`` puts all mass on the most visited child (ties share it).
        """
        visits = self.root_visits(tree).astype(np.float64)
        if visits.sum() == 0:
            raise ValueError(f"tree {tree} has no visited root children yet; run a search first")
        if temperature == 0:
            best = visits == visits.max()
            return best / best.sum()
        scaled = np.exp((np.log(np.maximum(visits, 1e-300)) - np.log(visits.max())) / temperature)
        scaled[visits == 0] = 0.0
        return scaled / scaled.sum()

    def choose(
        self,
        trees: Iterable[int] | None = None,
        method: Literal["visits", "value", "sample"] = "visits",
        temperature: float = 1.0,
        seed: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """The final move per tree, as a root-child node id (its action is ``nodes.action[id]``).

        ``visits``: most visited child (ties: lower action). ``value``: highest Q among visited
        children. ``sample``: drawn from :meth:`root_policy` at ``temperature``.
        """
        rng = np.random.default_rng(seed)
        picks = []
        for t in self._trees(trees):
            kids = self.children(int(self.roots[t]))
            visits = self.nodes.visits[kids]
            if len(kids) == 0 or visits.sum() == 0:
                raise ValueError(f"tree {t} has no visited root children yet; run a search first")
            if method == "visits":
                picks.append(kids[np.argmax(visits)])
            elif method == "value":
                q = np.where(visits > 0, self.q_values(kids), -np.inf)
                picks.append(kids[np.argmax(q)])
            elif method == "sample":
                picks.append(kids[rng.choice(len(kids), p=self.root_policy(t, temperature))])
            else:
                raise ValueError(f"unknown method {method!r}: use 'visits', 'value' or 'sample'")
        return np.asarray(picks, np.int64)

    def principal_variation(self, tree: int) -> list[int]:
        """The path from the root that always follows the most visited child."""
        node = int(self.roots[tree])
        path = [node]
        while self.nodes.num_children[node]:
            kids = self.children(node)
            visits = self.nodes.visits[kids]
            if visits.max() == 0:
                break
            node = int(kids[np.argmax(visits)])
            path.append(node)
        return path

    def to_networkx(self, tree: int) -> nx.DiGraph:
        """One tree as a ``DiGraph``: node attributes are the statistics plus ``payload``."""
        graph = nx.DiGraph(tree=tree, root=int(self.roots[tree]))
        a = self.nodes
        for node in self.tree_nodes(tree).tolist():
            graph.add_node(
                node,
                action=int(a.action[node]),
                depth=int(a.depth[node]),
                visits=int(a.visits[node]),
                value=float(self.mean_value(node)),
                q=float(self.q_values(node)),
                prior=float(a.prior[node]),
                reward=float(a.reward[node]),
                novelty=float(a.novelty[node]),
                terminal=bool(a.flags[node] & TERMINAL),
                payload=self.payload.get(node),
            )
            if a.parent[node] != NO_NODE:
                graph.add_edge(int(a.parent[node]), node)
        return graph

    # ------------------------------------------------------------------ checks

    def check_invariants(self, expect_no_pending: bool = True) -> None:
        """Raise ``AssertionError`` if the statistics are inconsistent.

        Rule: ``visits = own evaluations + Σ children's visits``, so a node's visits are at
        least the sum of its children's (more when the node itself was backed up or, being
        terminal, revisited); outside a wave no virtual loss or pending flag is left.
        """
        a, n = self.nodes, self.num_nodes
        child_sum = np.zeros(n, np.int64)
        has_parent = a.parent[:n] != NO_NODE
        np.add.at(child_sum, a.parent[:n][has_parent], a.visits[:n][has_parent])
        bad = np.flatnonzero(a.visits[:n] < child_sum)
        assert bad.size == 0, f"nodes {bad[:5]} have fewer visits than their children"
        if expect_no_pending:
            assert not a.virtual[:n].any(), "virtual loss left after release"
            assert not (a.flags[:n] & PENDING).any(), "pending leaves left after release"
        terminal_kids = (a.flags[:n] & TERMINAL).astype(bool) & (a.num_children[:n] > 0)
        assert not terminal_kids.any(), "a terminal node has children"

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the forest (arrays, config, payloads) to one ``.npz`` file."""
        n = self.num_nodes
        arrays = {name: getattr(self.nodes, name)[:n] for name in stored_fields(self.nodes)}
        meta = {"format": FORMAT_VERSION, "config": self.config.model_dump()}
        payload = np.frombuffer(pickle.dumps(self.payload, protocol=5), np.uint8)
        edges = self.nodes.edges[: self.nodes.meta[EDGES_USED]]
        with open(path, "wb") as f:
            np.savez_compressed(f, roots=self.roots, payload=payload, edges=edges,
                                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Forest:
        """Read a forest written by :meth:`save`.

        Payloads are unpickled: load only files you trust, as with ``torch.load``.
        """
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            if meta.get("format") not in (1, FORMAT_VERSION):
                raise ValueError(f"{path}: forest format {meta.get('format')} is not "
                                 f"{FORMAT_VERSION}; re-run the search with this version")
            n = len(data["parent"])
            forest = cls(EngineConfig(**meta["config"]), capacity=n)
            forest.reserve(0, 2 * n)
            a = forest.nodes
            kernels.clean(a, a.meta, n, n)
            for name in stored_fields(a):
                if name in data:  # files from before novelty / height: zeros, then refilled
                    getattr(a, name)[:n] = data[name]
            a.meta[SIZE] = n
            if "height" not in data:
                kernels.fill_height(a)
            if meta["format"] == 1:  # linked sibling lists: rebuild the child ranges
                kernels.link_children(a)
            else:
                a.edges[: len(data["edges"])] = data["edges"]
                a.meta[EDGES_USED] = len(data["edges"])
                a.meta[WIDEST] = data["num_children"].max(initial=0)
            forest.roots = data["roots"].astype(np.int64)
            forest.payload = pickle.load(io.BytesIO(data["payload"].tobytes()))
        return forest

    # ------------------------------------------------------------------ helpers

    def _trees(self, trees: Iterable[int] | None) -> np.ndarray:
        if trees is None:
            return np.arange(self.num_trees, dtype=np.int64)
        ids = np.asarray(list(trees) if not isinstance(trees, np.ndarray) else trees, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_trees):
            raise IndexError(f"tree ids must lie in [0, {self.num_trees}), got {ids}")
        return ids

    def _check_nodes(self, nodes: np.ndarray | int) -> None:
        nodes = np.asarray(nodes)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= self.num_nodes):
            raise IndexError(f"node ids must lie in [0, {self.num_nodes}); got "
                             f"{nodes.min()}..{nodes.max()}")
