"""TRL trainers for mined data: step-level DPO on preference pairs, SFT on solutions.

Two things TRL does not do for step-level data, done here by a small DPOTrainer subclass:

* **No EOS after an intermediate step.** TRL appends EOS (or the chat template's end of turn) to
  every chosen and rejected text. For a pair of steps that do not end the episode that would
  teach the model to stop mid-solution, so the end marker is cut again from the tokenized rows
  whose ``chosen_terminal`` / ``rejected_terminal`` column is false (the step's own delimiter,
  e.g. its newline, stays).
* **Per-pair weights.** With ``pair_weights`` pairs are drawn in proportion to their
  ``confidence`` (or ``margin``) column, so the expected loss is the weighted DPO loss. (TRL's
  ``label_smoothing`` no longer affects the sigmoid loss, and its per-sequence loss has no
  weight hook; sampling gives the same expectation without copying TRL's loss code.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from ..files import write_json
from ..models.tiny import torch_threads
from .config import TrainConfig

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
SFT_COLUMNS = ("prompt", "completion")


@dataclass
class TrainReport:
    """What one training run did."""

    method: str
    rows: int
    steps: int
    seconds: float
    loss: float | None
    out_dir: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strip_turn_end(ids: Sequence[int], special_ids: frozenset[int], tokenizer: Any) -> list[int]:
    """``ids`` without the end-of-sequence / end-of-turn marker a trainer appended.

    The marker is the trailing run of special and whitespace-only tokens, cut from its first
    special token: ``…27\\n<eos>`` keeps ``…27\\n``; ``…27\\n<|im_end|>\\n`` keeps ``…27\\n``.
    """
    ids = list(ids)
    cut = len(ids)
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] in special_ids:
            cut = i
        elif tokenizer.decode([ids[i]]).strip():  # real content: the marker ends here
            break
    return ids[:cut]


class StepDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, correct at step boundaries and optionally confidence-weighted."""

    def __init__(self, *args: Any, pair_weights: str = "none", **kwargs: Any) -> None:
        self.weight_column = None if pair_weights == "none" else pair_weights
        self.weights: torch.Tensor | None = None  # read before TRL drops the column
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        columns = set(dataset.column_names or ())
        if self.weight_column and dataset_name == "train":
            if self.weight_column not in columns:
                raise ValueError(f"pair_weights={self.weight_column} needs a "
                                 f"`{self.weight_column}` column in the pairs (mcts-agent "
                                 "pairs writes it); or train with pair_weights=none")
            self.weights = torch.tensor(dataset[self.weight_column], dtype=torch.double)
            self.weights.clamp_(min=1e-6)
        if not {"chosen_terminal", "rejected_terminal"} & columns:
            log.warning("%s rows have no chosen_terminal/rejected_terminal columns: every "
                        "completion is trained as the end of an episode (with EOS)", dataset_name)
            return dataset
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        special = frozenset(tokenizer.all_special_ids) - {tokenizer.unk_token_id}

        def drop_step_end(row: dict[str, Any]) -> dict[str, Any]:
            for side in ("chosen", "rejected"):
                if not row.get(f"{side}_terminal", True):
                    row[f"{side}_ids"] = strip_turn_end(row[f"{side}_ids"], special, tokenizer)
            return row

        return dataset.map(drop_step_end, desc=f"No EOS after steps in {dataset_name}")

    def _get_train_sampler(self, train_dataset=None):
        if self.weights is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(
            self.weights, len(self.weights), replacement=True, generator=generator)


def train_policy(
    model: str | Path,
    rows: Sequence[dict[str, Any]] | Dataset,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    reference: str | Path | None = None,
) -> TrainReport:
    """Train the model saved in ``model`` on ``rows`` and save the result in ``out_dir``.

    DPO rows need ``prompt``/``chosen``/``rejected`` (plain or conversational); SFT rows need
    ``prompt``/``completion``. ``reference`` is DPO's reference model; None = the starting
    model (in an iteration loop: the previous round's policy).
    """
    config = config or TrainConfig()
    needed = PAIR_COLUMNS if config.method == "dpo" else SFT_COLUMNS
    if not isinstance(rows, Dataset):
        rows = list(rows)
        check_rows(rows, needed, config.method)
    dataset = rows if isinstance(rows, Dataset) else Dataset.from_list(rows)
    missing = [c for c in needed if c not in dataset.column_names]
    if len(dataset) == 0:
        raise ValueError(f"no {config.method} rows to train on; mine more trees or loosen the "
                         "pair settings")
    if missing:
        raise ValueError(f"{config.method} rows need columns {list(needed)}; missing {missing}")
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model)
    transcript = not getattr(tokenizer, "chat_template", None) and _conversational(dataset)
    if transcript:
        dataset = dataset.map(lambda row: as_transcript(row, tokenizer))
        if config.method == "sft":  # tokenized as the policy reads it, so TRL adds no EOS
            dataset = dataset.map(lambda row: _tokenized(row, tokenizer),
                                  remove_columns=dataset.column_names)
    started = time.perf_counter()
    with torch_threads(config.threads):
        policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        args = _trainer_args(config, out)
        if transcript and config.method == "sft":
            args.completion_only_loss = True
        if config.method == "dpo":
            ref = (AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32)
                   if reference is not None else None)
            trainer = StepDPOTrainer(model=policy, ref_model=ref, args=args,
                                     train_dataset=dataset, processing_class=tokenizer,
                                     pair_weights=config.pair_weights)
        else:
            trainer = SFTTrainer(model=policy, args=args, train_dataset=dataset,
                                 processing_class=tokenizer)
        result = trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    report = TrainReport(
        config.method, len(dataset), trainer.state.global_step,
        round(time.perf_counter() - started, 2), result.training_loss, str(out),
        {k: float(v) for k, v in (logs[-1] if logs else {}).items()
         if isinstance(v, int | float)})
    write_json(out / "training.json",  # written last: it marks a finished training
               {"report": report.to_dict(), "config": config.model_dump(mode="json")})
    return report


def check_rows(rows: Sequence[Any], columns: Sequence[str], method: str) -> None:
    """Refuse rows TRL would fail on deep inside its trainer: each row is a mapping whose
    ``columns`` are all text, or all chat messages (``[{"role": ..., "content": ...}]``)."""
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{method} row {i} is a {type(row).__name__}, not a mapping of "
                             f"columns {list(columns)}")
        kinds = {c: _text_kind(row.get(c)) for c in columns if c in row}
        if bad := [c for c, kind in kinds.items() if kind is None]:
            raise ValueError(f"{method} row {i}: {bad[0]!r} must be text or a list of chat "
                             f"messages, got {type(row[bad[0]]).__name__} {row[bad[0]]!r:.60}")
        if len(set(kinds.values())) > 1:
            raise ValueError(f"{method} row {i} mixes text and chat-message columns "
                             f"({kinds}); use one form for every column")


def _text_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value):
        return "messages"
    return None


def _conversational(dataset: Dataset) -> bool:
    return len(dataset) > 0 and isinstance(dataset[0]["prompt"], list)


def as_transcript(row: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A chat row as plain text, for a model without a chat template (the tiny agent): the
    prompt exactly as the policy renders it at search time (a ``role: content`` transcript
    ending in ``assistant: ``), each answer side continuing that transcript."""
    from ..llm.hf import render_prompt

    def continuation(messages: list[dict[str, str]]) -> str:
        first, *rest = messages
        return first["content"] + "\n" + "".join(f"{m['role']}: {m['content']}\n" for m in rest)

    out = {"prompt": render_prompt(tokenizer, row["prompt"], use_chat_template=False)[0]}
    for side in ("completion", "chosen", "rejected"):
        if isinstance(row.get(side), list):
            out[side] = continuation(row[side])
    return out


def _tokenized(row: dict[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """A transcript SFT row as token ids, with the loss on the completion only: the prompt is
    encoded as :class:`~mcts_agent.llm.hf.HFPolicy` encodes it, the completion as the model
    would generate it after it. A turn ends at its delimiter, so no EOS is taught (TRL would
    append one to every plain-text completion)."""
    from ..llm.hf import render_prompt

    text, special = render_prompt(tokenizer, row["prompt"])
    prompt = tokenizer(text, add_special_tokens=special)["input_ids"]
    completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + completion,
            "completion_mask": [0] * len(prompt) + [1] * len(completion)}


def _trainer_args(config: TrainConfig, out: Path) -> DPOConfig | SFTConfig:
    cuda = torch.cuda.is_available()
    bf16 = config.precision == "bfloat16" or (
        config.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    common = dict(
        output_dir=str(out), learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        warmup_steps=config.warmup_ratio, lr_scheduler_type=config.scheduler,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, seed=config.seed, data_seed=config.seed,
        use_cpu=not cuda, bf16=bf16, report_to="none", save_strategy="no",
        logging_steps=10, dataset_num_proc=None)
    if config.method == "sft":
        return SFTConfig(**common)
    losses = ["sigmoid", "sft"] if config.nll_weight > 0 else ["sigmoid"]
    return DPOConfig(**common, beta=config.beta, loss_type=losses,
                     loss_weights=[1.0, config.nll_weight] if config.nll_weight > 0 else None)
