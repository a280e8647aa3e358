"""How a reward model reads text, shared by training and the critic so the two never drift apart.

A reward model is a causal LM with a scalar head (:mod:`mcts_agent.train.reward_model` trains
it; the ``reward-model`` critic plug-in, :class:`critics.reward_model.RewardModelCritic`,
scores with it). Training reads the head at the end of each step's delimiter in one pass over a
whole path (:func:`encode_path`); the critic reads it at the last token of one state's text
(:func:`encode_state`); the model is causal, so both read the same number. Prompts are rendered
exactly as the policy renders them (:func:`mcts_agent.llm.hf.render_prompt`). A finished model
folder holds :data:`META_FILE` (:func:`read_meta`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .contracts import Prompt
from .llm.hf import render_prompt

META_FILE = "reward_model.json"
"""Written last by training: a folder holding it is a finished reward model."""
FORMAT = "mcts-agent reward model"
HOW_TO_MAKE = ("make one with `mcts-agent train-rm ROWS --out DIR` (or "
               "mcts_agent.train.reward_model.train_reward_model) from stepwise rows "
               "(`mcts-agent pairs RUN --kind stepwise`)")


def _encode(tokenizer: Any, text: str, special: bool, ends: Sequence[int]) -> tuple[list[int],
                                                                                  list[int]]:
    """Token ids of ``text`` and, for each character index in ``ends`` (ascending), the last
    real token starting at or before it: the token that holds that character (or the one
    before it, if the tokenizer dropped the character)."""
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    real = [(i, start) for i, (start, end) in enumerate(enc["offset_mapping"]) if end > start]
    positions, j = [], 0
    for c in ends:
        while j < len(real) and real[j][1] <= c:
            j += 1
        positions.append(real[j - 1][0] if j else len(enc["input_ids"]) - 1)
    return list(enc["input_ids"]), positions


def encode_path(tokenizer: Any, prompt: Prompt, steps: Sequence[str],
                delimiter: str = "\n") -> tuple[list[int], list[int]]:
    """Token ids of ``prompt + step_1 + delimiter + step_2 + delimiter …`` and the position of
    each step's value: the token holding the last character of its delimiter."""
    text, special = render_prompt(tokenizer, prompt)
    ends = []
    for step in steps:
        text += step + delimiter
        ends.append(len(text) - 1)
    return _encode(tokenizer, text, special, ends)


def encode_state(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of one state's text, up to its last real token (where its value is read)."""
    text, special = render_prompt(tokenizer, prompt)
    ids, (last,) = _encode(tokenizer, text, special, [len(text) - 1])
    return ids[:last + 1]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask: real tokens keep positions 0…n−1, as alone."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def score_positions(model: Any, seqs: Sequence[Sequence[int]],
                    positions: Sequence[Sequence[int]], pad_id: int,
                    batch_size: int = 64) -> list[list[float]]:
    """sigmoid(head) of each sequence at its positions; sequences of similar length share a
    right-padded forward pass (``batch_size`` per pass)."""
    device = next(model.parameters()).device
    out: list[list[float]] = [[] for _ in seqs]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_right([seqs[i] for i in chunk], pad_id, device)
        probs = torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits[..., 0].float())
        for row, i in enumerate(chunk):
            out[i] = probs[row, list(positions[i])].tolist()
    return out


def pad_id_of(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``reward_model.json`` of a finished reward model folder; a clear error otherwise."""
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a reward model (no {META_FILE}: not made by "
                                f"train_reward_model, or its training did not finish); "
                                f"{HOW_TO_MAKE}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_file} is unreadable ({err}); {HOW_TO_MAKE}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} does not describe a reward model; {HOW_TO_MAKE}")
    return meta
