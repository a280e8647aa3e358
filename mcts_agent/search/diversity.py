"""How novel a step is among its siblings: the input of the engine's diversity term.

SWE-Search rewards actions unlike those already tried at the same point, so the search does
not spend its budget on paraphrases of one idea. Here a step's *novelty* is ``1 − max
similarity`` to its siblings, stored with :meth:`mcts_agent.engine.Forest.set_novelty` and
weighted by ``EngineConfig.diversity_weight``.

Similarity is the Jaccard index of the two steps' sets of word unigrams and bigrams
(lower-cased; numbers, words and each punctuation or operator character are tokens, so
``3*4=12`` is five tokens). Why this measure: it is linear in the text (sets, no alignment),
so scoring every pair of a few dozen siblings takes microseconds, unlike ``difflib`` ratios
(quadratic per pair); unigrams see the same content reworded, bigrams tell ``a-b`` from
``b-a``; and it needs no model. It is lexical: two steps that say the same thing in different
words count as different, which errs towards exploring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

_TOKEN = re.compile(r"\w+|[^\w\s]")

Features = frozenset[str | tuple[str, str]]


def features(text: str) -> Features:
    """The word unigrams and bigrams of ``text`` (lower-cased)."""
    tokens = _TOKEN.findall(text.lower())
    return frozenset([*tokens, *pairwise(tokens)])


def similarity(a: Features, b: Features) -> float:
    """Jaccard index of two feature sets; two empty texts are identical (1.0)."""
    if not a and not b:
        return 1.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


def novelty(action: str, siblings: Sequence[str]) -> float:
    """``1 −`` the highest similarity of ``action`` to any of ``siblings``, in [0, 1].

    1.0 when there are no siblings (nothing to repeat) or nothing is shared; 0.0 for a step
    whose words and word order equal a sibling's (case and spacing aside).
    """
    own = features(action)
    return 1.0 - max((similarity(own, features(s)) for s in siblings), default=0.0)


def sibling_novelty(actions: Sequence[str]) -> list[float]:
    """The novelty of each of ``actions`` among the others (one node's children, say).

    Equal to ``[novelty(a, actions[:i] + actions[i+1:]) for i, a in enumerate(actions)]``
    but each text is tokenised once. Call it again when a node gains children: a new sibling
    can only lower the others' novelty.
    """
    sets = [features(a) for a in actions]
    best = [0.0] * len(sets)
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            s = similarity(sets[i], sets[j])
            if s > best[i]:
                best[i] = s
            if s > best[j]:
                best[j] = s
    return [1.0 - s for s in best]
