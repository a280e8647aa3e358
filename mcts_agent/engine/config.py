"""Typed settings of the tree engine (validated; loadable from YAML / JSON as a plain mapping)."""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from ..settings import Settings
from .kernels import ABMCTS, PARAMS, PUCT, UCT, fill_explore


class EngineConfig(Settings):
    """How trees are searched.

    ``puct`` follows AlphaZero / MuZero and DeepMind's mctx (``muzero_action_selection`` with
    ``qtransform_by_parent_and_siblings``): score = min-max normalised Q + ``sqrt(N) · pb_c · p /
    (n + 1)`` with ``pb_c = pb_c_init + log((N + pb_c_base + 1) / pb_c_base)``; unvisited children
    score 0 before the prior term. ``uct`` is mean Q + ``uct_c · sqrt(ln N / n)``, unvisited first;
    it expects values roughly in [0, 1].

    Two optional terms, added to every child's score under either rule (SWE-Search adds depth
    and diversity terms to UCT); both are on the scale of the Q term, i.e. of normalised Q in
    [0, 1] for PUCT (and of values in [0, 1] for UCT), and both 0 leave selection unchanged:

    * ``depth_weight · height(child)``: the levels the child's branch has been expanded below
      it (0 for a leaf). Siblings share a depth, so what tells them apart in a descent is how
      far each branch has gone. Positive: keep pushing the deepest lines (towards finished
      trajectories, SWE-Search's depth bonus); negative: a depth penalty that spreads the search
      over shallower branches. With 0.05, a branch 4 levels deeper is worth 0.2 of the Q range.
    * ``diversity_weight · novelty(child)``: novelty in [0, 1] (1 = unlike its siblings), set
      by the caller with :meth:`~mcts_agent.engine.Forest.set_novelty` (default 0). With 0.1 a
      wholly novel child beats an identical-looking sibling that is up to 0.1 better in Q.

    Neither term changes when a node stops to widen (progressive widening) rather than descend.

    ``abmcts`` is adaptive branching (AB-MCTS, Inoue et al. 2025; Sakana's TreeQuest): at every
    node on the way down, Thompson sampling between "generate a new child here" (the node is
    the leaf; widen_c / widen_alpha are not used) and each existing child, from Beta posteriors
    of values in [0, 1] (:func:`~mcts_agent.engine.kernels.ab_choose`); ``ab_prior`` is their
    prior and ``seed`` seeds the draws. Priors, pb_c and the extra terms are not used by it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["puct", "uct", "abmcts"] = "puct"
    pb_c_init: float = Field(1.25, ge=0)
    pb_c_base: float = Field(19652.0, gt=0)
    uct_c: float = Field(math.sqrt(2.0), ge=0)
    virtual_loss: float = Field(
        1.0, ge=0, description="Virtual visits added per pending selection through a node."
    )
    virtual_value: float = Field(
        0.0, description="Value each virtual visit counts as (a loss: the low end of your values)."
    )
    widen_c: float = Field(
        0.0, ge=0, description="Progressive widening: a node may hold widen_c·N^widen_alpha "
        "children; 0 turns widening off (a node is expanded once)."
    )
    widen_alpha: float = Field(0.5, ge=0, le=1)
    discount: float = Field(1.0, ge=0, le=1)
    depth_weight: float = Field(
        0.0, allow_inf_nan=False, description="Per level a child's branch has been expanded "
        "below it, added to its selection score (scale: normalised Q in [0, 1]); > 0 prefers "
        "deeper lines, < 0 penalises them, 0 = off."
    )
    diversity_weight: float = Field(
        0.0, allow_inf_nan=False, description="Times the child's novelty among its siblings "
        "(Forest.set_novelty, in [0, 1]), added to its selection score; 0 = off."
    )
    ab_prior: tuple[float, float] = Field(
        (1.0, 1.0), description="abmcts: the Beta(alpha, beta) prior of every value (a child's "
        "and a new child's) before any evidence; (1, 1) is uniform on [0, 1].")
    seed: int = Field(0, ge=0, description="abmcts: seeds the Thompson draws (with each node's "
                      "path and visits, so a tree's choices do not depend on other trees).")
    max_collisions: int = Field(
        8, ge=0, description="Descents per tree and call that may end on an already-selected "
        "leaf before the tree yields fewer leaves than asked."
    )
    node_state: bool = Field(
        False, description="Keep one 64-bit word per node for the evaluator (Forest.nodes.state, "
        "zeroed until the evaluator writes it; 8 more bytes per node): what it derived for a "
        "node, e.g. a hash of its path or an index into its own table, so a child's "
        "evaluation starts from its parent's (mctx's embeddings)."
    )

    @property
    def can_widen(self) -> bool:
        """Whether a node may gain children after its first expansion."""
        return self.widen_c > 0 or self.rule == "abmcts"

    def kernel_params(self) -> np.ndarray:
        """The settings as the kernels read them: a one-element array of dtype
        :data:`~mcts_agent.engine.kernels.PARAMS` (a copy: worked out once per config, since
        its table of PUCT's exploration factors takes ~30 µs, a tenth of a small search)."""
        return _kernel_params(self).copy()


@functools.lru_cache(maxsize=64)
def _kernel_params(config: EngineConfig) -> np.ndarray:
    params = np.zeros(1, PARAMS)
    params[0] = (
        {"puct": PUCT, "uct": UCT, "abmcts": ABMCTS}[config.rule], config.pb_c_init,
        config.pb_c_base, config.uct_c, config.virtual_loss, config.virtual_value,
        config.widen_c, config.widen_alpha, config.discount, config.max_collisions,
        config.depth_weight, config.diversity_weight, config.ab_prior[0], config.ab_prior[1],
        config.seed, 0.0,
    )
    fill_explore(params)
    return params
