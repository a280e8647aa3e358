"""Whether two runs grew the same trees (a Ray run against a single-process run).

Same means: the same tasks, and per task the same nodes (parents, steps, depths, visits,
token counts, rewards, terminal flags, answers, scores), the same answer, solved flag, status
and search statistics apart from wall time. Floating-point fields (log-probabilities, priors,
values) are compared to ``tolerance``: a Hugging Face model's batched forward pass rounds a
little differently with other batch neighbours or thread counts (~1e-6 here), which changes no
sampled token (seeds are per request) and so no step of the tree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict

from ..trees import TreeRecord

FLOATS = ("logprob", "prior", "value", "critic", "disagreement", "components")


def tree_differences(a: Iterable[TreeRecord], b: Iterable[TreeRecord],
                     tolerance: float = 1e-4) -> list[str]:
    """Readable differences between two sets of trees (empty: the same trees)."""
    left = {r.task.id: r for r in a}
    right = {r.task.id: r for r in b}
    out = [f"task {t} only in the first run" for t in sorted(set(left) - set(right))]
    out += [f"task {t} only in the second run" for t in sorted(set(right) - set(left))]
    for task in sorted(set(left) & set(right)):
        out += [f"{task}: {d}" for d in _record_differences(left[task], right[task], tolerance)]
    return out


def _record_differences(x: TreeRecord, y: TreeRecord, tolerance: float) -> list[str]:
    out = [f"{name} {getattr(x, name)!r} != {getattr(y, name)!r}"
           for name in ("answer", "solved", "status", "fingerprint")
           if getattr(x, name) != getattr(y, name)]
    sx, sy = asdict(x.stats), asdict(y.stats)
    out += [f"stats.{k} {sx[k]!r} != {sy[k]!r}" for k in sx if k != "seconds" and sx[k] != sy[k]]
    if len(x.nodes) != len(y.nodes):
        return [*out, f"{len(x.nodes)} nodes != {len(y.nodes)}"]
    for i, (n, m) in enumerate(zip(x.nodes, y.nodes, strict=True)):
        dn, dm = asdict(n), asdict(m)
        for key, value in dn.items():
            if not _same(value, dm[key], tolerance if key in FLOATS else 0.0):
                out.append(f"node {i} {key} {value!r} != {dm[key]!r}")
    return out


def _same(a: object, b: object, tolerance: float) -> bool:
    if tolerance and isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return a == b
