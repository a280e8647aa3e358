"""B-STaR's balance (Zeng et al., 2024): each round, pick the sampling temperature and the
data threshold that balance exploration against exploitation, instead of fixed values.

Both picks maximise :func:`~mcts_agent.metrics.balance_score`, the mean over queries of
``min(distinct correct / n*, 1) · correct selected / selected``:

* **temperature**, on a small probe of training tasks before the round's search: ``samples``
  whole solutions per task at each candidate temperature, scored by the verifier (all kept);
* **pair threshold** (``min_margin``), on the round's own trees after the search: the pairs
  each candidate margin selects, where a pair is *correct* when the tree confirms it (a
  verified solution lies under the chosen step and none under the rejected one, whose
  subtree did finish; an edited step is wrong by construction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field

from ..contracts import Environment, Task
from ..data import PairConfig, mine_pairs
from ..data.pairs import outcome_below
from ..llm.base import Policy
from ..metrics import balance_score
from ..settings import Settings
from ..trees import TreeRecord


class BalanceConfig(Settings):
    """Candidates and probe of B-STaR's per-round choice. Immutable; unknown fields are
    rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperatures: tuple[float, ...] = Field(
        (0.7, 1.0, 1.3), min_length=1, description="Candidate sampling temperatures of the "
        "round's search.")
    margins: tuple[float, ...] = Field(
        (0.1, 0.2, 0.4, 0.6), min_length=1, description="Candidate pair thresholds "
        "(PairConfig.min_margin).")
    probe_tasks: int = Field(32, ge=1, description="Training tasks of the temperature probe "
                             "(drawn apart from the round's own).")
    samples: int = Field(8, ge=1, description="Solutions per probe task and temperature.")
    n_star: int = Field(4, ge=1, description="B-STaR's n*: distinct correct outputs per query "
                        "that count as full exploration.")


def choose_temperature(env: Environment, policy: Policy, tasks: Sequence[Task],
                       config: BalanceConfig, *, max_tokens: int, seed: int,
                       max_turns: int | None = None, max_step_tokens: int | None = None,
                       ) -> tuple[float, dict[float, float]]:
    """The candidate temperature with the best balance score on ``tasks`` (ties: the first
    listed), and every candidate's score."""
    from ..search.baselines import sample_solutions

    scores = {}
    for t in config.temperatures:
        attempts = sample_solutions(env, policy, tasks, config.samples, temperature=t,
                                    max_tokens=max_tokens, seed=seed, max_turns=max_turns,
                                    max_step_tokens=max_step_tokens)
        queries = [(len({x.strip() for x, s in zip(a.texts, a.scores, strict=True) if s == 1}),
                    sum(s == 1 for s in a.scores), len(a.scores)) for a in attempts]
        scores[t] = balance_score(queries, config.n_star)
    return max(scores, key=lambda t: (scores[t], -config.temperatures.index(t))), scores


def choose_margin(results: Sequence[TreeRecord], env: Environment, pairs: PairConfig,
                  config: BalanceConfig) -> tuple[PairConfig, list[dict[str, Any]], Counter,
                                                  dict[float, float]]:
    """The pair settings with the candidate ``min_margin`` of best balance score on the
    round's trees (ties: the first listed), its rows and counts, and every candidate's
    score."""
    solved = {r.task.id: outcome_below(r.nodes) for r in results}
    best: tuple[float, PairConfig, list, Counter] | None = None
    scores = {}
    for margin in config.margins:
        candidate = pairs.model_copy(update={"min_margin": margin})
        rows, counts = mine_pairs(results, env, candidate)
        scores[margin] = balance_score(_queries(rows, results, solved), config.n_star)
        if best is None or scores[margin] > best[0]:
            best = (scores[margin], candidate, rows, counts)
    assert best is not None
    return best[1], best[2], best[3], scores


def _queries(rows: list[dict[str, Any]], results: Sequence[TreeRecord],
             below: dict[str, tuple[list[bool], list[bool]]]) -> list[tuple[int, int, int]]:
    """Per tree: (distinct confirmed chosen texts, confirmed pairs, pairs)."""
    by_tree: dict[str, list[dict[str, Any]]] = {r.task.id: [] for r in results}
    for row in rows:
        by_tree.setdefault(row["task_id"], []).append(row)
    queries = []
    for task_id, tree_rows in by_tree.items():
        solved, finished = below[task_id]
        ok = [row for row in tree_rows if solved[row["chosen_node"]] and (
            row["rejected_node"] is None
            or (finished[row["rejected_node"]] and not solved[row["rejected_node"]]))]
        queries.append((len({repr(row["chosen"]) for row in ok}), len(ok), len(tree_rows)))
    return queries

