"""A plain-Python MCTS with the engine's documented semantics, written independently of it.

Object tree, one node at a time: the kind of implementation typical of LLM toolkits. Tests
compare the numba engine against it number for number; ``bench/engine.py`` times it.
Storage widths are mimicked where they change results (priors, logits, rewards are float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def f32(x: float) -> float:
    return float(np.float32(x))


# ----------------------------------------------------------------------------- the game


def mix(x: int) -> int:
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def unit(h: int) -> float:
    return (h >> 11) * (1.0 / 9007199254740992.0)


def game_eval(game, root_id: int, actions: list[int], num_children: int):
    """(logits or None if terminal, value) of the node reached by ``actions`` from a root."""
    steps = sum(mix(((d + 1) << 32) + action + 1) for d, action in enumerate(actions))
    h = mix(game.seed * GOLDEN + root_id + steps)
    depth = len(actions)
    done = depth >= game.max_depth or unit(mix(h ^ 7)) < game.terminal_prob
    if done and depth > 0:
        return None, (1.0 if unit(h) < 0.5 else 0.0)
    logits = []
    for j in range(game.branching):
        u = unit(mix(h + (num_children + j + 1) * 0xD1B54A32D192ED03))
        logits.append(game.logit_scale * (2.0 * u - 1.0))
    return logits, unit(h)


# ----------------------------------------------------------------------------- the tree


@dataclass(eq=False)
class Node:
    parent: Node | None
    action: int
    logit: float = 0.0
    prior: float = 0.0
    reward: float = 0.0
    visits: int = 0
    value_sum: float = 0.0
    virtual: int = 0
    terminal: bool = False
    pending: bool = False
    children: list[Node] = field(default_factory=list)

    def actions(self) -> list[int]:
        out, node = [], self
        while node.parent is not None:
            out.append(node.action)
            node = node.parent
        return out[::-1]


class ReferenceMCTS:
    """``config`` is an EngineConfig (only its fields are read); ``game`` a SyntheticGame."""

    def __init__(self, config, game, num_trees: int):
        self.c = config
        self.game = game
        self.roots = [Node(None, 0) for _ in range(num_trees)]
        self.root_ids = {id(r): t for t, r in enumerate(self.roots)}

    # statistics with virtual loss
    def n_eff(self, x: Node) -> float:
        return x.visits + self.c.virtual_loss * x.virtual

    def w_eff(self, x: Node) -> float:
        return x.value_sum + self.c.virtual_loss * x.virtual * self.c.virtual_value

    def q(self, x: Node, n: float) -> float:
        return x.reward + self.c.discount * self.w_eff(x) / n

    def best_child(self, x: Node) -> Node | None:
        n_parent = self.n_eff(x)
        scores = []
        if self.c.rule == "puct":
            parent_value = self.w_eff(x) / n_parent if n_parent > 0 else 0.0
            qs = [self.q(ch, self.n_eff(ch)) for ch in x.children if self.n_eff(ch) > 0]
            lo, hi = min([parent_value, *qs]), max([parent_value, *qs])
            scale = max(hi - lo, 1e-8)
            pb_c = self.c.pb_c_init + math.log((n_parent + self.c.pb_c_base + 1.0)
                                               / self.c.pb_c_base)
            explore = math.sqrt(n_parent) * pb_c
            for ch in x.children:
                n = self.n_eff(ch)
                score = (self.q(ch, n) - lo) / scale if n > 0 else 0.0
                scores.append(score + explore * ch.prior / (n + 1.0))
        else:
            log_n = math.log(max(n_parent, 1.0))
            for ch in x.children:
                n = self.n_eff(ch)
                scores.append(self.q(ch, n) + self.c.uct_c * math.sqrt(log_n / n)
                              if n > 0 else math.inf)
        free = [i for i, ch in enumerate(x.children) if not (ch.pending and not ch.children)]
        if not free:
            return None
        best = max(free, key=lambda i: (scores[i], -i))
        return x.children[best]

    def wants_children(self, x: Node) -> bool:
        if self.c.widen_c <= 0 or x.pending:
            return False
        return len(x.children) < self.c.widen_c * x.visits ** self.c.widen_alpha

    def descend(self, root: Node) -> Node:
        x = root
        while not x.terminal and x.children and not self.wants_children(x):
            child = self.best_child(x)
            if child is None:  # every child is a pending leaf
                break
            x = child
        return x

    def add_virtual(self, x: Node | None, delta: int) -> None:
        while x is not None:
            x.virtual += delta
            x = x.parent

    def backup(self, x: Node | None, value: float) -> None:
        g = value
        while x is not None:
            x.visits += 1
            x.value_sum += g
            g = x.reward + self.c.discount * g
            x = x.parent

    # one leaf evaluation, AlphaZero-style
    def evaluate(self, leaf: Node) -> None:
        root = leaf
        while root.parent is not None:
            root = root.parent
        logits, value = game_eval(self.game, self.root_ids[id(root)], leaf.actions(),
                                  len(leaf.children))
        if logits is None:
            leaf.terminal = True
        else:
            for logit in logits:
                leaf.children.append(Node(leaf, len(leaf.children), logit=f32(logit)))
            top = max(ch.logit for ch in leaf.children)
            total = sum(math.exp(ch.logit - top) for ch in leaf.children)
            for ch in leaf.children:
                ch.prior = f32(math.exp(ch.logit - top) / total)
        if leaf.pending:
            leaf.pending = False
            self.add_virtual(leaf, -1)
        self.backup(leaf, value)

    def select(self, k: int, budget: list[int]) -> list[Node]:
        leaves = []
        for t, root in enumerate(self.roots):
            found, collided = 0, []  # found: leaves + terminal revisits
            while found < k and budget[t] > 0:
                x = self.descend(root)
                if x.terminal:
                    self.backup(x, x.value_sum / x.visits if x.visits else 0.0)
                    budget[t] -= 1
                    found += 1
                elif x.pending or (x.children and not self.wants_children(x)):
                    if len(collided) >= self.c.max_collisions:
                        break
                    self.add_virtual(x, 1)
                    collided.append(x)
                else:
                    x.pending = True
                    self.add_virtual(x, 1)
                    leaves.append(x)
                    found += 1
                    budget[t] -= 1
            for x in collided:
                self.add_virtual(x, -1)
        return leaves

    def run(self, num_simulations: int, leaves_per_call: int) -> ReferenceMCTS:
        for root in self.roots:
            self.evaluate(root)
        budget = [num_simulations] * len(self.roots)
        while True:
            leaves = self.select(leaves_per_call, budget)
            if not leaves and not any(budget):
                return self
            for leaf in leaves:
                self.evaluate(leaf)

    # views for comparison
    def nodes_breadth_first(self, tree: int) -> list[Node]:
        order = [self.roots[tree]]
        for x in order:
            order.extend(x.children)
        return order

    def root_visits(self, tree: int) -> list[int]:
        return [ch.visits for ch in self.roots[tree].children]
