"""Ask/tell: the engine runs the search, the caller's own loop evaluates the leaves.

For users who bring their own model loop (an asyncio client, a pool of GPU workers, a game
server): :meth:`AskTell.ask` hands out leaves (virtual loss keeps a tree's pending leaves apart),
and :meth:`AskTell.tell` takes each leaf's evaluation in any order, from whichever worker finished
first. Every leaf counts once: telling a leaf twice, or one that was never handed out, raises.
Both methods are thread-safe.

Each tree's root goes out first and is not counted as a simulation (as in mctx and
:func:`~mcts_agent.engine.search.search`); then every tree spends ``num_simulations`` (a leaf
handed out, or a descent that ends on a terminal node). Told in the order asked, one batch at a
time, it builds exactly the trees of :func:`~mcts_agent.engine.search.search` with
``leaves_per_call = max_pending``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import EngineConfig
from .forest import Evaluation, Forest
from .search import _prepare


@dataclass(frozen=True)
class Leaf:
    """A node handed out for evaluation: ``node`` of tree ``tree``; ``ticket`` names this
    hand-out (tell it back once)."""

    ticket: int
    tree: int
    node: int


class AskTell:
    """A search over the trees of ``forest`` (or of a new one of ``num_trees`` roots), driven by
    the caller's ``ask`` / ``tell`` loop.

    Args:
        num_simulations: simulations per tree (the root's evaluation not counted).
        max_pending: most leaves of one tree out at once (K; virtual loss keeps them apart).
        logits: priors told are log-probabilities (else probabilities).
    """

    def __init__(
        self,
        num_simulations: int,
        *,
        num_trees: int | None = None,
        forest: Forest | None = None,
        config: EngineConfig | None = None,
        max_pending: int = 8,
        logits: bool = False,
    ) -> None:
        if num_simulations < 0 or max_pending < 1:
            raise ValueError("num_simulations must be >= 0 and max_pending >= 1")
        self.forest = _prepare(forest, num_trees, config)
        self.max_pending = int(max_pending)
        self.logits = logits
        count = self.forest.num_trees
        self._budget = np.full(count, int(num_simulations), np.int64)
        self._out_per_tree = np.zeros(count, np.int64)
        self._root_out = np.zeros(count, bool)
        self._out: dict[int, Leaf] = {}
        self._tickets = itertools.count()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Leaves handed out and not told yet."""
        return len(self._out)

    @property
    def done(self) -> bool:
        """Every root evaluated, every simulation spent, nothing pending."""
        with self._lock:
            return not self._out and self._unevaluated().size == 0 and not self._budget.any()

    def ask(self, max_leaves: int | None = None) -> list[Leaf]:
        """Hand out up to ``max_leaves`` leaves (default: as many as the trees allow, at most
        ``max_pending`` per tree). Unevaluated roots go first. An empty list means nothing can
        go out until pending leaves are told (or, with nothing pending, that the search is done).
        """
        with self._lock:
            roots = self._unevaluated()
            roots = roots[~self._root_out[roots]][:max_leaves]
            if roots.size:
                self._root_out[roots] = True
                return [self._hand_out(tree, int(self.forest.roots[tree])) for tree in roots]
            return self._select(max_leaves)

    def tell(
        self,
        leaf: Leaf,
        priors: Sequence[float] | np.ndarray,
        value: float,
        *,
        terminal: bool = False,
        reward: float = 0.0,
    ) -> None:
        """Apply ``leaf``'s evaluation: expand it with one child per valid prior, back up
        ``value``, release its virtual loss (see :class:`~mcts_agent.engine.forest.Evaluation`).

        Raises:
            ValueError: ``leaf`` was already told, or never handed out by this search.
        """
        with self._lock:
            if self._out.get(leaf.ticket) != leaf:
                raise ValueError(f"leaf {leaf} was already told, or was never handed out by "
                                 "this search: each leaf counts once")
            evaluation = Evaluation(np.asarray(priors, np.float64)[None, :],
                                    np.array([value], np.float64), np.array([terminal]),
                                    np.array([reward], np.float64))
            self.forest.apply(np.array([leaf.node]), evaluation, logits=self.logits)
            del self._out[leaf.ticket]
            self._out_per_tree[leaf.tree] -= 1

    # ------------------------------------------------------------------ inside

    def _unevaluated(self) -> np.ndarray:
        return np.flatnonzero(self.forest.nodes.visits[self.forest.roots] == 0)

    def _hand_out(self, tree: int, node: int) -> Leaf:
        leaf = Leaf(next(self._tickets), int(tree), int(node))
        self._out[leaf.ticket] = leaf
        self._out_per_tree[tree] += 1
        return leaf

    def _select(self, max_leaves: int | None) -> list[Leaf]:
        """Select leaves in trees with room and budget (terminal revisits back up at once and
        spend budget without a leaf: selection repeats until a leaf comes or nothing can)."""
        evaluated = self.forest.nodes.visits[self.forest.roots] > 0
        while True:
            allowed = np.where(evaluated, np.minimum(
                self._budget, self.max_pending - self._out_per_tree), 0)
            if max_leaves is not None:  # the first trees take the cap, in tree order
                before = np.concatenate([[0], np.cumsum(allowed)[:-1]])
                allowed = np.clip(max_leaves - before, 0, allowed)
            trees = np.flatnonzero(allowed > 0)
            if trees.size == 0:
                return []
            left = allowed.copy()
            selection = self.forest.select(self.max_pending, trees=trees, budget=left)
            self._budget -= allowed - left
            if len(selection):
                return [self._hand_out(tree, node) for node, tree in
                        zip(selection.nodes.tolist(), selection.trees.tolist(), strict=True)]
