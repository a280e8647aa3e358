"""From finished trees to TRL datasets: preference pairs, SFT solutions, per-step labels."""

from .export import read_rows, write_card, write_rows
from .pairs import (
    PairConfig,
    levenshtein,
    mine_pairs,
    mine_rows,
    sft_rows,
    stepwise_rows,
    wilson_interval,
)

__all__ = [
    "PairConfig",
    "levenshtein",
    "mine_pairs",
    "mine_rows",
    "read_rows",
    "sft_rows",
    "stepwise_rows",
    "wilson_interval",
    "write_card",
    "write_rows",
]
