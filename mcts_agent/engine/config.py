"""Typed settings of the tree engine (validated; loadable from YAML / JSON as a plain mapping)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .kernels import PUCT, UCT, KernelParams


class EngineConfig(BaseModel):
    """How trees are searched.

    ``puct`` follows AlphaZero / MuZero and DeepMind's mctx (``muzero_action_selection`` with
    ``qtransform_by_parent_and_siblings``): score = min-max normalised Q + ``sqrt(N) · pb_c · p /
    (n + 1)`` with ``pb_c = pb_c_init + log((N + pb_c_base + 1) / pb_c_base)``; unvisited children
    score 0 before the prior term. ``uct`` is mean Q + ``uct_c · sqrt(ln N / n)``, unvisited first;
    it expects values roughly in [0, 1].
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["puct", "uct"] = "puct"
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
    max_collisions: int = Field(
        8, ge=0, description="Descents per tree and call that may end on an already-selected "
        "leaf before the tree yields fewer leaves than asked."
    )

    def kernel_params(self) -> KernelParams:
        return KernelParams(
            rule=PUCT if self.rule == "puct" else UCT,
            pb_c_init=float(self.pb_c_init),
            pb_c_base=float(self.pb_c_base),
            uct_c=float(self.uct_c),
            virtual_loss=float(self.virtual_loss),
            virtual_value=float(self.virtual_value),
            widen_c=float(self.widen_c),
            widen_alpha=float(self.widen_alpha),
            discount=float(self.discount),
            max_collisions=int(self.max_collisions),
        )
