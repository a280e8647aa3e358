"""Training data from finished trees: preference pairs (TRL's DPO format), verified solutions
(SFT) and per-step labels (value / process-reward models).

Texts follow the policy's own format: a prompt is ``env.prompt`` of a state replayed from
``env.reset(task)``, and a step is its action followed by ``env.step_delimiter``, exactly as the
policy generated it. A node's value is read as a success rate with ``visits`` samples; a
terminal node with a verifier score (data mode) is exact: its score is the truth.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..contracts import CorruptingEnvironment, Environment, Prompt, is_interactive
from ..settings import Settings
from ..trees import NodeRecord, ReplayedTree, ReplayError, TreeRecord, replay_failed, replay_trees

Row = dict[str, Any]
_EPS = 1e-9  # margins are float differences: 0.8 - 0.6 must pass a 0.2 gate


class PairConfig(Settings):
    """Which preference pairs are mined from a tree. Immutable; unknown fields are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["sibling", "path", "outcome", "first_error", "corrupted"] = Field(
        "sibling", description="sibling: confident pairs of sibling steps anywhere in the tree; "
        "path: MCTS-DPO's rule, best vs worst sibling along the most visited path; outcome: "
        "whole correct vs whole wrong solutions (needs verifier scores); first_error "
        "(Step-DPO): on each wrong solution the first step after which the tree found no "
        "verified solution, against a sibling step that leads to one; corrupted (RISE): each "
        "step of a verified solution against a copy with one subtle edit that the "
        "environment checked to be wrong (needs an environment with corrupt_step).")
    min_visits: int = Field(1, ge=0, description="Visits each side needs (a verified terminal "
                            "node always qualifies: its score is exact).")
    z: float = Field(1.64, ge=0, description="Wilson interval z (1.64 ≈ 90% one-sided); the "
                     "better side's lower bound must exceed the worse side's upper bound. "
                     "0 disables this gate.")
    min_margin: float = Field(0.2, ge=0, le=1, description="value(chosen) - value(rejected) "
                              "at least this.")
    max_per_depth: int | None = Field(4, ge=1, description="Pairs per depth per tree; None = "
                                      "no cap.")
    max_per_tree: int | None = Field(16, ge=1, description="Pairs per tree; None = no cap.")
    min_edit_distance: int = Field(0, ge=0, description="Levenshtein distance in characters "
                                   "between the two step texts (rStar-Math uses 20).")
    completion: Literal["step", "continuation"] = Field(
        "step", description="step: each side is one step; continuation: the step plus the "
        "best continuation under it (most visited child, down to a terminal node or leaf).")
    max_disagreement: float | None = Field(
        None, ge=0, le=1, description="Drop a pair when a hybrid critic's components disagreed "
        "on either (unverified) side by more than this (max − min value); None = keep all.")
    conversational: bool = Field(False, description="Chat-message rows: the root prompt as "
                                 "the user turn, prefix steps + side as the assistant turn.")
    seed: int = Field(0, description="Breaks exact ties when caps drop pairs (reproducibly).")


# ----------------------------------------------------------------------------- statistics


def wilson_interval(successes_rate: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a success rate observed over ``n`` samples.

    ``n <= 0`` knows nothing: (0, 1); ``z == 0`` is the point estimate."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes_rate, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def levenshtein(a: str, b: str, limit: int | None = None) -> int:
    """Edit distance between ``a`` and ``b``; with ``limit``, stops early and returns ``limit``
    once the distance is known to be at least that (all a gate needs)."""
    if len(a) < len(b):
        a, b = b, a
    if limit is not None and len(a) - len(b) >= limit:
        return limit
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        if limit is not None and min(row) >= limit:
            return limit
    return row[-1] if limit is None else min(row[-1], limit)


@dataclass(frozen=True)
class _Rate:
    value: float | None
    visits: int
    exact: bool  # a verified terminal: the score is the truth, not an estimate


def _rate(node: NodeRecord) -> _Rate:
    exact = node.terminal and node.score is not None
    return _Rate(node.rate, node.visits, exact)


def _interval(rate: _Rate, z: float) -> tuple[float, float]:
    assert rate.value is not None
    return (rate.value, rate.value) if rate.exact else wilson_interval(rate.value, rate.visits, z)


def _confidence(chosen: _Rate, rejected: _Rate) -> float:
    """P(chosen truly better) ≈ Φ((p̃_c − p̃_r) / √(s_c² + s_r²)) with Agresti–Caffo rates
    p̃ = (n·p + 1) / (n + 2) and s² = p̃(1 − p̃) / (n + 2); a verified terminal is exact
    (p̃ = score, s² = 0). Both exact: 1 if the chosen is better."""
    def moments(rate: _Rate) -> tuple[float, float]:
        assert rate.value is not None
        if rate.exact:
            return rate.value, 0.0
        n = max(rate.visits, 0)
        p = (n * rate.value + 1) / (n + 2)
        return p, p * (1 - p) / (n + 2)

    (pc, vc), (pr, vr) = moments(chosen), moments(rejected)
    if vc + vr == 0:
        return 1.0 if pc > pr else 0.5 if pc == pr else 0.0
    return 0.5 * (1 + math.erf((pc - pr) / math.sqrt(2 * (vc + vr))))


# ----------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class _Pair:
    parent: int
    chosen: int
    rejected: int | None  # None: the rejected side is ``rejected_text``, a step not in the tree
    chosen_rate: _Rate
    rejected_rate: _Rate
    rejected_text: str | None = None

    @property
    def margin(self) -> float:
        assert self.chosen_rate.value is not None and self.rejected_rate.value is not None
        return self.chosen_rate.value - self.rejected_rate.value

    @property
    def confidence(self) -> float:
        return _confidence(self.chosen_rate, self.rejected_rate)


def mine_pairs(
    results: Iterable[TreeRecord], env: Environment, config: PairConfig | None = None
) -> tuple[list[Row], Counter]:
    """Preference pairs from finished trees, and a Counter of what happened (``trees``,
    ``pairs`` and skip reasons: ``low_visits``, ``same_text``, ``small_margin``,
    ``not_confident``, ``edit_distance``, ``duplicate``, ``cap_depth``, ``cap_tree``,
    ``no_correct``, ``no_wrong``, ``value_disagrees``, ``not_corruptible``, ``replay_error``).

    Columns: ``prompt``, ``chosen``, ``rejected``, ``chosen_terminal``, ``rejected_terminal``,
    ``task_id``, ``parent_node``, ``chosen_node``, ``rejected_node``, ``depth`` (of the two
    steps), ``chosen_visits``, ``rejected_visits``, ``chosen_value``, ``rejected_value`` (the
    verifier's score for a verified terminal node), ``margin``, ``confidence``, ``strategy``.
    A ``corrupted`` pair's rejected side is an edited step, not a node: ``rejected_node`` is
    None and ``rejected_visits`` 0.

    ``confidence`` = Φ((p̃_c − p̃_r) / √(s_c² + s_r²)), the normal-approximation probability
    that the chosen side is truly better, with Agresti–Caffo rates p̃ = (n·p + 1) / (n + 2),
    s² = p̃(1 − p̃) / (n + 2) (p = value, n = visits); a verified terminal node is exact
    (p̃ = score, s² = 0).
    """
    config = config or PairConfig()
    if is_interactive(env) and (config.strategy == "outcome" or config.completion != "step"):
        raise ValueError("agent trees give one-turn pairs: use strategy sibling or path with "
                         "completion=step (whole trajectories go through `mcts-agent splice`)")
    counts: Counter = Counter()
    rows: list[Row] = []
    for tree in replay_trees(results, env, counts):
        try:  # texts are replayed lazily, so a replay can still fail here
            found = _STRATEGIES[config.strategy](tree, config, counts)
            rows.extend(_select(tree, found, config, counts))
        except ReplayError as err:
            replay_failed(tree.task_id, err, counts)
    counts["pairs"] = len(rows)
    return rows, counts


def mine_rows(
    kind: Literal["pairs", "sft", "stepwise"], results: Iterable[TreeRecord],
    env: Environment, config: PairConfig | None = None, *, per_tree: int = 1,
) -> tuple[list[Row], Counter]:
    """One kind of training rows from finished trees, and a Counter of what happened:
    preference ``pairs`` (:func:`mine_pairs` with ``config``), ``sft`` rows (``per_tree``
    verified solutions per tree, chat-shaped if ``config.conversational``) or ``stepwise``
    labels. ``counts["rows"]`` is the number of rows."""
    config = config or PairConfig()
    counts: Counter = Counter()
    if kind == "pairs":
        rows, counts = mine_pairs(results, env, config)
    elif kind == "sft":
        rows = sft_rows(results, env, per_tree, config.conversational, counts=counts)
    elif kind == "stepwise":
        rows = stepwise_rows(results, env, counts=counts)
    else:
        raise ValueError(f"kind is pairs, sft or stepwise, not {kind!r}")
    counts["rows"] = len(rows)
    return rows, counts


def _gate(tree: ReplayedTree, a: int, b: int, config: PairConfig, counts: Counter,
          wilson: bool) -> _Pair | None:
    """The pair of siblings ``a``/``b`` (better one chosen) if it passes every gate."""
    ra, rb = _rate(tree.nodes[a]), _rate(tree.nodes[b])
    if any(r.value is None or (not r.exact and r.visits < config.min_visits) for r in (ra, rb)):
        counts["low_visits"] += 1
        return None
    assert ra.value is not None and rb.value is not None
    if rb.value > ra.value:
        a, b, ra, rb = b, a, rb, ra
    pair = _Pair(tree.nodes[a].parent, a, b, ra, rb)  # type: ignore[arg-type]
    step_a, step_b = tree.action(a).strip(), tree.action(b).strip()
    if step_a == step_b:
        counts["same_text"] += 1
    elif pair.margin + _EPS < config.min_margin or pair.margin <= 0:
        counts["small_margin"] += 1
    elif wilson and config.z > 0 and _interval(ra, config.z)[0] <= _interval(rb, config.z)[1]:
        counts["not_confident"] += 1
    elif _disputed(tree, pair, config):
        counts["disagreement"] += 1
    elif config.min_edit_distance and levenshtein(
            step_a, step_b, config.min_edit_distance) < config.min_edit_distance:
        counts["edit_distance"] += 1
    else:
        return pair
    return None


def _disputed(tree: ReplayedTree, pair: _Pair, config: PairConfig) -> bool:
    """Whether the critics disagreed too much on a side whose value is an estimate."""
    if config.max_disagreement is None:
        return False
    return any(not rate.exact and (tree.nodes[i].disagreement or 0.0) > config.max_disagreement
               for i, rate in ((pair.chosen, pair.chosen_rate),
                               (pair.rejected, pair.rejected_rate)))


def _sibling(tree: ReplayedTree, config: PairConfig, counts: Counter) -> list[_Pair]:
    """Every confident pair of siblings, best first: confidence (to 3 decimals, so saturated
    ones tie), then margin, then a seeded hash."""
    pairs = [pair for kids in tree.children for a, b in combinations(kids, 2)
             if (pair := _gate(tree, a, b, config, counts, wilson=True))]

    def rank(pair: _Pair) -> tuple[float, float, str]:
        tie = f"{config.seed}:{tree.task_id}:{pair.parent}:{pair.chosen}:{pair.rejected}"
        digest = hashlib.blake2b(tie.encode(), digest_size=8).hexdigest()
        return -round(pair.confidence, 3), -pair.margin, digest

    return sorted(pairs, key=rank)


def _path(tree: ReplayedTree, config: PairConfig, counts: Counter) -> list[_Pair]:
    """MCTS-DPO: along the most visited path, the highest- vs lowest-valued sibling (no
    confidence gate)."""
    pairs, node = [], 0
    while tree.children[node]:
        kids = tree.children[node]
        ok = [k for k in kids if (r := _rate(tree.nodes[k])).value is not None
              and (r.exact or r.visits >= config.min_visits)]
        if len(kids) > 1 and len(ok) < 2:
            counts["low_visits"] += 1
        elif len(ok) > 1:
            def key(k: int) -> tuple[float, int, int]:
                return _rate(tree.nodes[k]).value or 0.0, tree.nodes[k].visits, -k

            best, worst = max(ok, key=key), min(ok, key=key)
            if pair := _gate(tree, best, worst, config, counts, wilson=False):
                pairs.append(pair)
        node = tree.best_child(node)  # type: ignore[assignment]
    return pairs


def _outcome(tree: ReplayedTree, config: PairConfig, counts: Counter) -> list[_Pair]:
    """Whole solutions: the best-valued correct one with the lowest-valued wrong one, and so
    on (the shorter list repeats)."""
    nodes = tree.nodes
    correct = _verified(tree)
    wrong = sorted(_wrong(tree), key=lambda i: (nodes[i].value or 0.0, nodes[i].depth, i))
    if not correct:
        counts["no_correct"] += 1
    if not wrong:
        counts["no_wrong"] += 1
    if not correct or not wrong:
        return []
    n = max(len(correct), len(wrong))
    pairs = []
    for c, w in ((correct[k % len(correct)], wrong[k % len(wrong)]) for k in range(n)):
        if config.min_edit_distance and levenshtein(
                tree.text(tree.path(c)), tree.text(tree.path(w)),
                config.min_edit_distance) < config.min_edit_distance:
            counts["edit_distance"] += 1
            continue
        pairs.append(_Pair(0, c, w, _Rate(1.0, nodes[c].visits, True),
                           _Rate(0.0, nodes[w].visits, True)))
    return pairs


def _verified(tree: ReplayedTree) -> list[int]:
    """Finished nodes the verifier accepted, one per solution text: best value, then
    shortest, first."""
    nodes = tree.nodes
    return _distinct(tree, sorted(
        (i for i, n in enumerate(nodes) if n.terminal and n.score == 1),
        key=lambda i: (-(nodes[i].value or 0.0), nodes[i].depth, i)))


def _distinct(tree: ReplayedTree, ids: Iterable[int]) -> list[int]:
    """``ids`` without repeated solution texts (the first of each kept)."""
    seen: set[str] = set()
    out = []
    for i in ids:
        text = tree.text(tree.path(i))
        if text not in seen:
            seen.add(text)
            out.append(i)
    return out


def _first_error(tree: ReplayedTree, config: PairConfig, counts: Counter) -> list[_Pair]:
    """Step-DPO's pairs, located by the tree: on each distinct wrong solution, the first step
    under which no verified solution was found, against the best-valued sibling step under
    which one was (shortest wrong solutions first)."""
    nodes = tree.nodes
    solved, _ = outcome_below(nodes)
    pairs = []
    for wrong in _wrong(tree):
        first = next((n for n in tree.path(wrong) if not solved[n]), None)
        parent = None if first is None else nodes[first].parent
        if first is None or parent is None or not solved[parent]:
            counts["no_correct"] += 1  # nothing verified from the root (or that prefix) down
            continue
        chosen = max((k for k in tree.children[parent] if solved[k]),
                     key=lambda k: (_rate(nodes[k]).value or 0.0, nodes[k].visits, -k))
        pair = _gate(tree, chosen, first, config, counts, wilson=False)
        if pair is not None and pair.chosen != chosen:
            counts["value_disagrees"] += 1  # the wrong step looked better: no clear signal
        elif pair is not None:
            pairs.append(pair)
    return pairs


def outcome_below(nodes: Sequence[NodeRecord]) -> tuple[list[bool], list[bool]]:
    """Per node of a tree: whether a verified solution lies at or below it, and whether any
    finished node does (children come after their parents)."""
    solved = [n.terminal and n.score == 1 for n in nodes]
    finished = [n.terminal for n in nodes]
    for i in range(len(nodes) - 1, 0, -1):
        parent = nodes[i].parent
        if parent is not None:
            solved[parent] = solved[parent] or solved[i]
            finished[parent] = finished[parent] or finished[i]
    return solved, finished


def _wrong(tree: ReplayedTree) -> list[int]:
    """Finished nodes that failed (score 0, or no answer), one per text, shortest first."""
    nodes = tree.nodes
    return _distinct(tree, sorted(
        (i for i, n in enumerate(nodes) if n.terminal and (n.score == 0 or n.answer is None)),
        key=lambda i: (nodes[i].depth, i)))


def _corrupted(tree: ReplayedTree, config: PairConfig, counts: Counter) -> list[_Pair]:
    """RISE's error-injected negatives: every step of the best verified solution against the
    same step with one edit that the environment checked to be wrong (seeded per tree)."""
    env = tree.env
    if not isinstance(env, CorruptingEnvironment):
        raise ValueError(f"strategy 'corrupted' needs an environment that can break a step "
                         f"(corrupt_step); {getattr(env, 'name', type(env).__name__)!r} "
                         "has none: choose another strategy")
    solutions = _verified(tree)
    if not solutions:
        counts["no_correct"] += 1
        return []
    rng = random.Random(f"{config.seed}:{tree.task_id}")
    pairs = []
    for step in tree.path(solutions[0]):
        parent = tree.nodes[step].parent
        assert parent is not None
        edited = env.corrupt_step(tree.state(parent), tree.action(step), rng)
        if edited is None:
            counts["not_corruptible"] += 1
            continue
        pair = _Pair(parent, step, None, _rate(tree.nodes[step]), _Rate(0.0, 0, True),
                     rejected_text=edited)
        if pair.chosen_rate.value is None or pair.margin + _EPS < config.min_margin:
            counts["small_margin"] += 1  # a step the tree itself rated low: not a clear win
        else:
            pairs.append(pair)
    return pairs


_STRATEGIES = {"sibling": _sibling, "path": _path, "outcome": _outcome,
               "first_error": _first_error, "corrupted": _corrupted}


def _select(tree: ReplayedTree, pairs: list[_Pair], config: PairConfig,
            counts: Counter) -> list[Row]:
    """Rows of ``pairs`` (best first) without repeats, within the caps; in tree order."""
    kept: list[Row] = []
    seen: set[str] = set()
    per_depth: Counter = Counter()
    depth_cap = None if config.strategy == "outcome" else config.max_per_depth
    for pair in pairs:
        row = _pair_row(tree, pair, config)
        key = repr((row["prompt"], row["chosen"], row["rejected"]))
        if key in seen:
            counts["duplicate"] += 1
        elif depth_cap is not None and per_depth[row["depth"]] >= depth_cap:
            counts["cap_depth"] += 1
        elif config.max_per_tree is not None and len(kept) >= config.max_per_tree:
            counts["cap_tree"] += 1
        else:
            seen.add(key)
            per_depth[row["depth"]] += 1
            kept.append(row)
    if config.strategy == "outcome":
        return kept
    return sorted(kept, key=lambda r: (r["parent_node"], -r["margin"], r["chosen_node"],
                                       -1 if r["rejected_node"] is None else r["rejected_node"]))


def _side(tree: ReplayedTree, pair: _Pair, node: int | None, config: PairConfig
          ) -> tuple[str, bool]:
    """A side's text (after the shared prefix) and whether it ends the episode."""
    if node is None:  # an edited step ends the text where the step it copies does (an answer)
        assert pair.rejected_text is not None
        return pair.rejected_text + tree.delimiter, ends_text(tree.nodes[pair.chosen])
    if config.strategy == "outcome":
        ids = tree.path(node)
    elif config.completion == "continuation":
        ids = tree.continuation(node)
    else:
        ids = [node]
    return tree.text(ids), ends_text(tree.nodes[ids[-1]])


def ends_text(node: NodeRecord) -> bool:
    """Whether the model's own text ends at ``node``: a finished episode with an answer. A step
    the environment cut (a false line, the depth limit) is not where the model would stop
    writing, so training must not teach an end-of-sequence there."""
    return node.terminal and node.answer is not None


def _pair_row(tree: ReplayedTree, pair: _Pair, config: PairConfig) -> Row:
    (chosen, chosen_end), (rejected, rejected_end) = (
        _side(tree, pair, pair.chosen, config), _side(tree, pair, pair.rejected, config))
    if is_interactive(tree.env):  # an agent: the chat so far, and one turn on each side
        prompt = tree.prompt(pair.parent)
        chosen_out = [{"role": "assistant", "content": tree.action(pair.chosen)}]
        rejected_out = [{"role": "assistant", "content": rejected.removesuffix(tree.delimiter)}]
        chosen_end = rejected_end = False  # a turn ends at its delimiter, never at EOS
    elif _chat(tree, config.conversational):
        prefix = tree.text(tree.path(pair.parent))
        prompt: Prompt = _messages(tree.root_prompt)
        chosen_out: Any = [{"role": "assistant", "content": prefix + chosen}]
        rejected_out: Any = [{"role": "assistant", "content": prefix + rejected}]
    else:
        prompt, chosen_out, rejected_out = tree.prompt(pair.parent), chosen, rejected
    nodes = tree.nodes
    return {
        "prompt": prompt, "chosen": chosen_out, "rejected": rejected_out,
        "chosen_terminal": chosen_end, "rejected_terminal": rejected_end,
        "task_id": tree.task_id, "parent_node": pair.parent, "chosen_node": pair.chosen,
        "rejected_node": pair.rejected, "depth": nodes[pair.parent].depth + 1,
        "chosen_visits": nodes[pair.chosen].visits,
        "rejected_visits": 0 if pair.rejected is None else nodes[pair.rejected].visits,
        "chosen_value": pair.chosen_rate.value, "rejected_value": pair.rejected_rate.value,
        "margin": pair.margin, "confidence": pair.confidence, "strategy": config.strategy,
    }


def _chat(tree: ReplayedTree, conversational: bool) -> bool:
    """Chat rows when asked for, or when the environment's prompts already are messages."""
    return conversational or isinstance(tree.root_prompt, list)


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


# ----------------------------------------------------------------------------- SFT, stepwise


def sft_rows(
    results: Iterable[TreeRecord], env: Environment, max_per_tree: int = 1,
    conversational: bool = False, *, counts: Counter | None = None,
) -> list[Row]:
    """Verified solutions for SFT (STaR / ReST): per tree up to ``max_per_tree`` distinct
    solutions ending in a node with score 1, best value first, then shortest.

    Columns: ``prompt`` (the root prompt), ``completion`` (every step with its delimiter),
    ``task_id``, ``node``, ``value``, ``depth``; chat messages when ``conversational``."""
    rows = []
    for tree in replay_trees(results, env, counts):
        nodes = tree.nodes
        for i in _verified(tree)[:max_per_tree]:
            text = tree.text(tree.path(i))
            chat = _chat(tree, conversational)
            rows.append({
                "prompt": _messages(tree.root_prompt) if chat else tree.root_prompt,
                "completion": [{"role": "assistant", "content": text}] if chat else text,
                "task_id": tree.task_id, "node": i,
                "value": 1.0 if nodes[i].value is None else nodes[i].value,
                "depth": nodes[i].depth,
            })
    return rows


def stepwise_rows(
    results: Iterable[TreeRecord], env: Environment, threshold: float = 0.5, *,
    counts: Counter | None = None,
) -> list[Row]:
    """Per-step labels (Math-Shepherd style) for value / process-reward models: one row per
    distinct root-to-terminal path.

    Columns: ``prompt`` (the root prompt), ``completions`` (step texts, no delimiter),
    ``labels`` (value ≥ ``threshold``; a verified terminal node's score decides for it),
    ``values`` (the Monte Carlo estimates), ``task_id``. Paths through unvisited nodes are
    skipped: they have no estimate."""
    rows = []
    for tree in replay_trees(results, env, counts):
        seen: set[tuple[str, ...]] = set()
        for i, node in enumerate(tree.nodes):
            if not node.terminal or i == 0:
                continue
            path = tree.path(i)
            steps = tuple(tree.action(j) for j in path)
            rates = [_rate(tree.nodes[j]) for j in path]
            if steps in seen or any(r.value is None for r in rates):
                continue
            seen.add(steps)
            values = [r.value if (v := tree.nodes[j].value) is None else v
                      for j, r in zip(path, rates, strict=True)]
            rows.append({
                "prompt": tree.root_prompt, "completions": list(steps),
                "labels": [bool(r.value >= threshold) for r in rates],  # type: ignore[operator]
                "values": values, "task_id": tree.task_id,
            })
    return rows
