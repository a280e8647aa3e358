"""A value / process reward model trained on the search's own stepwise labels.

This closes the loop Qwen2.5-Math and rStar-Math describe: search → per-step Monte Carlo labels
(:func:`mcts_agent.data.stepwise_rows`) → a reward model → a better critic for the next search
(:class:`critics.reward_model.RewardModelCritic`, ``--critic reward-model=DIR``).

**Model.** The policy's causal LM with a scalar head: ``AutoModelForTokenClassification`` with
``num_labels=1`` loads the backbone's weights and adds a new ``score`` head (a linear layer on
the last hidden states, after a dropout). Any architecture transformers gives a
token-classification class (Llama, Qwen2, Mistral, Gemma …) works; others are refused with a
clear error.

**One forward pass per root-to-leaf path.** A row's text is ``prompt + step_1 + "\\n" + step_2
+ "\\n" …`` and the value of prefix i is the head at the token holding the last character of
step i's delimiter. The model is causal, so that output sees only the tokens up to there: it
equals scoring prefix i on its own, which is what the critic does at search time (the last token
of ``environment.prompt(state)``). Positions come from the tokenizer's offset mapping, so any
fast tokenizer works. Caveat for BPE tokenizers: where the delimiter merges with the next
characters into one token (``"\\n\\n"``, ``"\\nStep"``), the full path's token sees a little of
the next step and the prefix alone may end in a different token; char-level tokenizers and
those that keep ``"\\n"`` a token of its own are exact.

**Loss.** Binary cross-entropy with logits against the targets — the soft Monte Carlo
``values`` (default) or the 0/1 ``labels`` — at step ends only. Prefixes shared by several paths
of one tree are counted once per path, as Math-Shepherd's per-path rows do.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from transformers import AutoModelForTokenClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ..metrics import auroc, brier
from ..models.tiny import TINY_ARITH_DIR, torch_threads
from ..reward_encoding import (
    FORMAT,
    META_FILE,
    encode_path,
    pad_id_of,
    pad_right,
    score_positions,
)
from ..settings import Settings

log = logging.getLogger(__name__)


class RewardModelConfig(Settings):
    """How a reward model is trained on stepwise rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Literal["values", "labels"] = Field(
        "values", description="values: the soft Monte Carlo estimates; labels: 0/1.")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW; 1e-3 suits the tiny "
                                 "reasoner, pretrained models of 0.5B+ want ~1e-5.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training rows.")
    batch_size: int = Field(16, ge=1, description="Paths per step.")
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up linearly; "
                          "then linear decay to 0.")
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int | None = Field(1024, ge=8, description="Token cap of one path (and at most "
                                   "the model's positions); steps beyond it are dropped.")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Share of tasks (by "
                                       "task_id, so no task is in both) held out.")
    delimiter: str = Field("\n", description="The environment's step delimiter, which the "
                           "rows' completions lack.")
    freeze_backbone: bool = Field(False, description="Train the head only.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: as is).")
    seed: int = 0


@dataclass
class RewardModelReport:
    """What one training run did; validation measures are at the step level (NaN without a
    validation set or with one class only there)."""

    rows: int  # training paths used
    prefixes: int  # step prefixes trained on (per epoch)
    val_rows: int
    val_prefixes: int
    steps: int
    loss: float  # mean training loss over the last 10 % of steps
    seconds: float
    val_auroc: float  # against target ≥ 0.5
    val_brier: float
    skipped: dict[str, int]  # rows left out, by reason
    truncated: int  # step prefixes dropped because their path exceeded max_length
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return {k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(self).items()}


@dataclass
class _Path:
    ids: list[int]
    positions: list[int]
    targets: list[float]
    task_id: str


def _list(value: Any) -> list | None:
    """A list column's items (list, tuple, array); None for anything else."""
    return list(value) if isinstance(value, Sequence | np.ndarray) and not isinstance(
        value, str) else None


def _skip_reason(row: Any, target: str) -> str | None:
    if not isinstance(row, Mapping) or any(
            k not in row for k in ("prompt", "completions", target, "task_id")):
        return "missing_keys"
    steps, targets, prompt = _list(row["completions"]), _list(row[target]), row["prompt"]
    if not steps or not all(isinstance(s, str) and s for s in steps):
        return "empty_completions"
    if targets is None or len(targets) != len(steps):
        return "length_mismatch"
    try:
        if not all(0.0 <= float(t) <= 1.0 for t in targets):  # NaN fails too
            return "bad_targets"
    except (TypeError, ValueError):
        return "bad_targets"
    if not isinstance(prompt, str) and not (_list(prompt) and all(
            isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt)):
        return "bad_prompt"
    return None


def _prepare(rows: Sequence[Any], tokenizer: Any, config: RewardModelConfig,
             limit: int | None) -> tuple[list[_Path], Counter, int]:
    """Encoded paths, rows skipped by reason, and step prefixes cut by ``limit``."""
    paths, skipped, truncated = [], Counter(), 0
    for row in rows:
        reason = _skip_reason(row, config.target)
        if reason is None:
            ids, positions = encode_path(tokenizer, row["prompt"], list(row["completions"]),
                                         config.delimiter)
            targets = [float(t) for t in row[config.target]]
            if limit is not None and len(ids) > limit:
                kept = sum(p < limit for p in positions)
                truncated += len(positions) - kept
                ids, positions, targets = ids[:limit], positions[:kept], targets[:kept]
            if positions:
                paths.append(_Path(ids, positions, targets, str(row["task_id"])))
                continue
            reason = "too_long"
        skipped[reason] += 1
    return paths, skipped, truncated


def _split(paths: list[_Path], fraction: float, seed: int) -> tuple[list[_Path], list[_Path]]:
    """Train and validation paths, split by task so no task is on both sides."""
    tasks = sorted({p.task_id for p in paths})
    random.Random(seed).shuffle(tasks)
    n_val = min(max(round(len(tasks) * fraction), 1 if fraction > 0 else 0), len(tasks) - 1)
    held = set(tasks[:n_val])
    return ([p for p in paths if p.task_id not in held], [p for p in paths if p.task_id in held])


def _batches(paths: list[_Path], size: int, seed: int) -> Iterator[list[_Path]]:
    generator = torch.Generator().manual_seed(seed)
    while True:  # epoch after epoch, each in a fresh seeded order
        order = torch.randperm(len(paths), generator=generator).tolist()
        for start in range(0, len(order), size):
            yield [paths[i] for i in order[start:start + size]]


def _loss(model: Any, batch: list[_Path], pad_id: int) -> torch.Tensor:
    """BCE with logits at the step ends of ``batch`` only."""
    device = next(model.parameters()).device
    ids, mask = pad_right([p.ids for p in batch], pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
    rows = torch.tensor([b for b, p in enumerate(batch) for _ in p.positions], device=device)
    cols = torch.tensor([i for p in batch for i in p.positions], device=device)
    targets = torch.tensor([t for p in batch for t in p.targets], device=device)
    return F.binary_cross_entropy_with_logits(logits[rows, cols].float(), targets)


def load_backbone(base: str | Path) -> Any:
    """``base``'s causal LM with a new scalar head (float32); refuses a model whose backbone
    weights do not all load (the head is the only new part)."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the "head newly initialised" report is expected
    try:
        model, info = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=1, dtype=torch.float32, output_loading_info=True)
    except ValueError as err:  # no token-classification class for this architecture
        raise ValueError(f"cannot put a scalar head on {base}: transformers has no "
                         f"token-classification model for it ({err})") from err
    finally:
        transformers_logging.set_verbosity(verbosity)
    backbone = model.base_model_prefix + "."
    if missing := sorted(k for k in info["missing_keys"] if k.startswith(backbone)):
        raise ValueError(f"{base}: backbone weights missing under a scalar head: {missing[:5]}")
    return model


def predict_steps(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], *,
                  delimiter: str = "\n", batch_size: int = 64) -> list[list[float]]:
    """The model's value of every step prefix of each row (``prompt``/``completions``), read
    in one forward pass per path, as in training."""
    encoded = [encode_path(tokenizer, r["prompt"], r["completions"], delimiter) for r in rows]
    was_training = model.training
    model.eval()
    try:
        return score_positions(model, [ids for ids, _ in encoded], [p for _, p in encoded],
                               pad_id_of(tokenizer), batch_size)
    finally:
        model.train(was_training)


def train_reward_model(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    base_model: str | Path | None = None,
    config: RewardModelConfig | None = None,
    *,
    progress: Callable[[int, int, float], Any] | None = None,
) -> RewardModelReport:
    """Train a reward model from ``base_model`` (default: the shipped tiny reasoner) on
    stepwise ``rows`` and save it in ``out_dir``; see the module docstring.

    Rows need ``prompt``, ``completions``, ``task_id`` and the target column (``values`` or
    ``labels``, one per step, in [0, 1]); other rows are skipped and counted by reason.
    ``progress(step, steps, loss)`` is called after every optimizer step. ``out_dir`` gets the
    model, its tokenizer and, written last, ``reward_model.json`` (settings, report, base
    model, delimiter): a folder without it is not a finished reward model.
    """
    config = config or RewardModelConfig()
    base = Path(base_model) if base_model is not None else TINY_ARITH_DIR
    out = Path(out_dir)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.is_fast:
        raise ValueError(f"{base}: a reward model needs a fast tokenizer (offset mappings)")
    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = load_backbone(base)
        positions = getattr(model.config, "max_position_embeddings", None)
        limit = min((n for n in (config.max_length, positions) if n), default=None)
        paths, skipped, truncated = _prepare(rows, tokenizer, config, limit)
        if not paths:
            raise ValueError(f"no usable stepwise rows (skipped: {dict(skipped)}); mine them "
                             "with `mcts-agent pairs RUN --kind stepwise`")
        train, val = _split(paths, config.validation_fraction, config.seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).train()
        if config.freeze_backbone:
            model.base_model.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        steps = max(1, math.ceil(config.epochs * math.ceil(len(train) / config.batch_size)))
        warm = max(1, round(config.warmup * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
            (s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
        pad_id = pad_id_of(tokenizer)
        losses = []
        batches = _batches(train, config.batch_size, config.seed)
        for step in range(1, steps + 1):
            loss = _loss(model, next(batches), pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step, steps, losses[-1])
            if step % 50 == 0 or step == steps:
                log.info("reward model step %d/%d loss %.4f", step, steps,
                         np.mean(losses[-50:]))
        model.eval()
        predicted = score_positions(model, [p.ids for p in val], [p.positions for p in val],
                                    pad_id) if val else []
    values = [v for row in predicted for v in row]
    labels = [t >= 0.5 for p in val for t in p.targets]
    report = RewardModelReport(
        rows=len(train), prefixes=sum(len(p.positions) for p in train), val_rows=len(val),
        val_prefixes=len(values), steps=steps,
        loss=float(np.mean(losses[-max(1, steps // 10):])),
        seconds=round(time.perf_counter() - started, 2),
        val_auroc=auroc(values, labels), val_brier=brier(values, labels),
        skipped=dict(skipped), truncated=truncated, out_dir=str(out))
    _save(model, tokenizer, out, {
        "format": FORMAT, "version": 1, "base_model": str(base), "delimiter": config.delimiter,
        "max_length": limit, "config": config.model_dump(mode="json"),
        "report": report.to_dict()})
    log.info("reward model: %s", report)
    return report


def _save(model: Any, tokenizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """Weights and tokenizer first, ``reward_model.json`` last (via a temporary file), so a
    crash never leaves a folder that looks finished."""
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / META_FILE)
