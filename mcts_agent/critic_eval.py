"""How good critics are, measured on saved trees against verified outcomes, and the fit of
hybrid weights on the same kind of data (``mcts-agent eval-critic`` / ``fit-hybrid``).

Each critic scores the labelled nodes (:mod:`mcts_agent.data.labels`) in batched calls; the
report gives AUROC (does it rank right nodes above wrong ones) over all nodes and over the
unfinished ones alone (finished failures are easy: most critics know a broken episode), Brier
score and expected calibration error (are its values probabilities), and a reliability plot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contracts import Critic, checked_assessments
from .data.labels import LabelledNode
from .hybrid import HybridWeights, combine, fit_weights, log_loss
from .metrics import Calibration, auroc, brier, calibration


@dataclass
class CriticScore:
    """One critic's quality on a set of labelled nodes."""

    name: str
    nodes: int
    positives: int
    auroc: float
    auroc_unfinished: float  # on unfinished nodes only, where a value is a forecast
    brier: float
    ece: float
    log_loss: float
    mean_value: float
    seconds: float
    tokens: int
    calibration: Calibration

    def row(self) -> dict[str, Any]:
        """The scalar fields (no bins)."""
        out = asdict(self)
        out.pop("calibration")
        return out


def score_values(name: str, values: Sequence[float], labels: Sequence[bool],
                 finished: Sequence[bool] | None = None, *, seconds: float = 0.0,
                 tokens: int = 0, bins: int = 10) -> CriticScore:
    v, y = np.asarray(values, float), np.asarray(labels, bool)
    open_ = ~np.asarray(finished, bool) if finished is not None else np.ones(len(v), bool)
    cal = calibration(v, y, bins)
    return CriticScore(name, len(v), int(y.sum()), auroc(v, y), auroc(v[open_], y[open_]),
                       brier(v, y), cal.ece, log_loss(v, y),
                       float(v.mean()) if len(v) else float("nan"), seconds, tokens, cal)


def critic_values(critic: Critic, nodes: Sequence[LabelledNode], *, chunk: int = 256,
                  progress: Callable[[int], Any] | None = None) -> tuple[np.ndarray, int]:
    """The critic's value of every node (``chunk`` nodes per batched call) and the tokens it
    generated doing so."""
    values, tokens = [], 0
    for start in range(0, len(nodes), chunk):
        part = nodes[start:start + chunk]
        assessments = checked_assessments(critic, [n.input for n in part])
        values.extend(a.value for a in assessments)
        tokens += sum(a.tokens for a in assessments)
        if progress is not None:
            progress(len(part))
    return np.asarray(values, float), tokens


def evaluate_critics(
    critics: Mapping[str, Critic], nodes: Sequence[LabelledNode], *,
    progress: Callable[[int], Any] | None = None,
) -> tuple[dict[str, CriticScore], dict[str, np.ndarray]]:
    """Scores of each critic and their raw values."""
    labels, finished = [n.label for n in nodes], [n.terminal for n in nodes]
    scores, values = {}, {}
    for name, critic in critics.items():
        started = time.perf_counter()
        values[name], tokens = critic_values(critic, nodes, progress=progress)
        scores[name] = score_values(name, values[name], labels, finished, tokens=tokens,
                                    seconds=time.perf_counter() - started)
    return scores, values


def fit_hybrid(values: Mapping[str, np.ndarray], nodes: Sequence[LabelledNode],
               specs: Mapping[str, str], *, l2: float = 1e-2,
               source: str = "") -> tuple[HybridWeights, CriticScore]:
    """Logistic weights of the components ``specs`` names (their ``values`` on ``nodes``), and
    the fitted hybrid's score on the same nodes (in-sample: measure it on other trees with
    ``eval-critic``). Failed episodes (finished, no answer) are left out: in a search the
    verifier decides them, so the hybrid is fitted on the nodes it will be asked about."""
    # failed episodes are left to the verifier in front of every search critic
    keep = np.array([not n.failed for n in nodes], bool)
    labels = [n.label for n, k in zip(nodes, keep, strict=True) if k]
    finished = [n.terminal for n, k in zip(nodes, keep, strict=True) if k]
    names = list(specs)
    matrix = np.column_stack([np.asarray(values[name])[keep] for name in names])
    weights, bias = fit_weights(matrix, labels, l2=l2)
    fitted = combine(matrix, weights, bias, "logistic")
    score = score_values("hybrid", fitted, labels, finished)
    hybrid = HybridWeights(names, weights.tolist(), bias, "logistic", dict(specs), {
        "source": source, "nodes": len(labels), "failed_left_out": int((~keep).sum()),
        "positives": int(np.sum(labels)), "l2": l2,
        "in_sample_auroc": score.auroc, "in_sample_brier": score.brier})
    return hybrid, score


def write_report(scores: Mapping[str, CriticScore], out_dir: str | Path,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """``critics.json`` (scores and bins), ``critics.md`` (a table) and ``reliability.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "critics.json").write_text(json.dumps({
        **(extra or {}), "critics": {name: asdict(s) for name, s in scores.items()}},
        indent=2, default=float))
    (out / "critics.md").write_text(markdown_table(scores))
    plot_reliability(scores, out / "reliability.png")
    return out


def markdown_table(scores: Mapping[str, CriticScore]) -> str:
    lines = ["| critic | nodes | right | AUROC | AUROC unfinished | Brier | ECE | log loss | "
             "mean | seconds | tokens |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scores.values():
        lines.append(f"| {s.name} | {s.nodes} | {s.positives} | {s.auroc:.3f} | "
                     f"{s.auroc_unfinished:.3f} | "
                     f"{s.brier:.3f} | {s.ece:.3f} | {s.log_loss:.3f} | {s.mean_value:.3f} | "
                     f"{s.seconds:.1f} | {s.tokens} |")
    return "\n".join(lines) + "\n"


def plot_reliability(scores: Mapping[str, CriticScore], path: Path) -> None:
    """Observed rate against predicted value per bin, one line per critic (marker area ∝
    nodes in the bin), and the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfectly calibrated")
    for s in scores.values():
        cal = s.calibration
        sizes = 300 * np.asarray(cal.counts) / max(s.nodes, 1) + 8
        line, = ax.plot(cal.predicted, cal.observed, lw=1.2,
                        label=f"{s.name} (AUROC {s.auroc:.2f}, ECE {s.ece:.2f})")
        ax.scatter(cal.predicted, cal.observed, s=sizes, color=line.get_color(), alpha=0.6)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="critic value (bin mean)",
           ylabel="verified right (rate in bin)", title="Critic reliability")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
