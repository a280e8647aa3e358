"""A tiny Llama that plays small TextWorld quests, trained from scratch on CPU.

It is to agents what :mod:`mcts_agent.models.tiny` is to reasoning: a model that runs anywhere,
so search, critics and training on interactive environments can be exercised end to end. The
shipped checkpoint (``mcts_agent/models/tiny-agent/``) is deliberately imperfect: greedy play
wins only part of the held-out games, while sampling several episodes wins more of them, which
leaves room for tree search and for learning from recoveries.

It imitates noisy demonstrations: on training games, walkthroughs with random detours are
played through the ``textworld-tiny`` environment (:func:`tiny_agent_environment`, built
through the registry exactly as the search builds it; this package never imports
``environments``), and at every state the model learns the game's own next command from
*that* state, so it also learns to recover. Prompts are rendered exactly as
:class:`~mcts_agent.llm.hf.HFPolicy` renders them (no chat template: ``role: content`` lines
ending in ``assistant: ``); the target is ``Action: <command>\\n`` and the loss covers the
target only. The tokenizer is a byte-level BPE trained on the same text, so
object names of unseen games still encode.

Reproduce the shipped checkpoint with (see :data:`DEFAULT_STEPS`)::

    python -m mcts_agent.models.tiny_agent --out mcts_agent/models/tiny-agent --seed 0

Training is step-count based. It needs textworld (``pip install textworld``) and generates the
training games into the game cache on first use; loading the checkpoint needs only torch and
transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ..contracts import Task
from ..llm.hf import HFPolicy, render_prompt
from ..react import render_turn
from ..registry import environments as environment_registry
from .tiny import fit, torch_threads

AgentEnvironment = Any
"""The ``textworld-tiny`` environment: an ``environments.agent`` AgentEnvironment over a
TextWorld game (typed loosely: models never import ``environments``)."""

__all__ = [
    "DEFAULT_STEPS",
    "TINY_AGENT_DIR",
    "build_examples",
    "build_model",
    "build_tokenizer",
    "cached_examples",
    "evaluate",
    "load_tiny_agent",
    "prompt_settings",
    "tiny_agent_environment",
    "train",
]

log = logging.getLogger(__name__)

TINY_AGENT_DIR = Path(__file__).resolve().parent / "tiny-agent"
"""Where the shipped checkpoint lives."""

DEFAULT_STEPS = 1000
"""Optimizer steps of the shipped checkpoint (chosen so greedy success lands in 25-60 %).

Held-out greedy success of seed 0 rises late and steeply: 0 % at step 400, 4 % at 600, 18 % at
800, 26 % at 1000 (``--eval-every 200``), as the model learns to copy commands out of the
valid-actions list.
"""

MAX_POSITIONS = 1024
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
MAX_REPLY_TOKENS = 48
_EXAMPLES_FORMAT = 1  # bump when build_examples changes what it produces
DEFAULT_MAX_TURNS = 10


# ---------------------------------------------------------------------------- environment


def tiny_agent_environment(**overrides: Any) -> AgentEnvironment:
    """The environment the tiny agent was trained in: the registry's ``textworld-tiny``
    (``environments/agent/tiny_textworld.py`` holds its settings). ``overrides`` replace game
    settings (``cache_dir``, ``seed`` …) or prompt settings (``pool_size`` …); changing a
    trained setting puts the agent off its training distribution."""
    return environment_registry.create("textworld-tiny", **overrides)


def prompt_settings(env: AgentEnvironment) -> dict[str, Any]:
    """How ``env`` prompts the agent, as ``training.json`` records it."""
    return {"instructions": env.instructions, "max_history": env.max_history,
            "show_valid_actions": env.show_valid_actions}


# ---------------------------------------------------------------------------- model and tokenizer


def build_tokenizer(texts: Sequence[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``; ``<bos>`` is prepended, padding is on the left.

    Every byte is in the vocabulary, so words of unseen games still encode, and ``decode``
    restores the text exactly (``"\\n"`` included, which the stop string needs). Text is cut
    at newlines and punctuation only, so tokens may span words ("Canadian style box"): prompts
    get ~25 % shorter than with word-level pieces, and a command is cut the same way in the
    valid-actions list (``", <command>,"``) as in the reply (``"Action: <command>\\n"``), so the
    reply is a copy of prompt tokens.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\n.,:!?;]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  max_token_length=16, show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    bos = core.token_to_id("<bos>")
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        padding_side="left", clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS)


def build_model(tokenizer: PreTrainedTokenizerBase, hidden_size: int = 128, layers: int = 4,
                seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised small Llama sized for ``tokenizer`` (about 1.3M parameters at the
    defaults: a float32 checkpoint of ~5 MB)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, do_sample=False)
    return model


def load_tiny_agent(path: str | Path | None = None, **kwargs: Any) -> HFPolicy:
    """The tiny agent (by default the shipped checkpoint) as a CPU :class:`HFPolicy`."""
    path = Path(path) if path is not None else TINY_AGENT_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model in {path}; train one with python -m mcts_agent.models.tiny_agent")
    return HFPolicy.from_pretrained(path, **{"device": "cpu", **kwargs})


# ---------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Example:
    """One supervised turn: the rendered prompt and the reply the model should write."""

    prompt: str
    target: str
    task_id: str


class _Linear:
    """A copyable game seen as replay-only, for playing one demonstration: the simulator pool
    then hands the one simulator over at every step instead of copying it (5x faster), and
    ``sim`` is that live simulator, whose plan gives the expert command."""

    can_copy = False

    def __init__(self, game: Any) -> None:
        self.game, self.name, self.sim = game, game.name, None

    def start(self, task: Task) -> Any:
        self.sim, first = self.game.start(task)
        return self.sim, first


def _noise(demo: int) -> float:
    """Detour probability of demonstration ``demo`` of a game: one clean walkthrough, then
    increasingly noisy ones."""
    return (0.0, 0.15, 0.3, 0.45)[demo % 4]


def build_examples(env: AgentEnvironment, tasks: Sequence[Task], demos: int = 4,
                   seed: int = 0) -> list[tuple[Sequence[dict[str, str]], str, str]]:
    """``(prompt messages, target reply, task id)`` for every state of ``demos`` noisy
    demonstrations per task (the game's ``demonstration_step`` with the noise of
    :func:`_noise`): the prompt is ``env.prompt(state)``, the target
    ``render_turn(expert command) + step delimiter``, whatever command the demonstration then
    sent."""
    game = env.game
    out: list[tuple[Sequence[dict[str, str]], str, str]] = []
    for task in tasks:
        limit = game.demonstration_limit(task)
        for demo in range(demos):
            rng = random.Random(f"{seed}/{task.id}/{demo}")
            linear = _Linear(game)
            # A fresh environment per demonstration, prompting as ``env`` does: no cached
            # outcome can skip a step of the live simulator.
            player = dataclasses.replace(env, game=linear, pool_size=2)
            state = player.reset(task)
            while len(state.commands) < limit:
                choice = game.demonstration_step(linear.sim, state.current, _noise(demo), rng)
                if choice is None:
                    break
                command, expert = choice
                out.append((player.prompt(state), render_turn(expert) + env.step_delimiter,
                            task.id))
                state = player.step(state, render_turn(command)).state
            player.close()
    return out


def cached_examples(env: AgentEnvironment, tasks: Sequence[Task], demos: int = 4,
                    seed: int = 0) -> list[tuple[Sequence[dict[str, str]], str, str]]:
    """:func:`build_examples`, kept beside the games (``examples/<key>.jsonl.gz``, written
    atomically): playing thousands of demonstrations takes minutes, reading them a second."""
    import gzip
    import hashlib
    import os

    key = hashlib.sha256(json.dumps(
        [_EXAMPLES_FORMAT, [t.id for t in tasks], [t.problem for t in tasks], demos, seed,
         [_noise(d) for d in range(demos)], env.instructions, env.max_history,
         env.show_valid_actions, env.strict_actions, env.step_delimiter]).encode()).hexdigest()
    path = env.game.folder / "examples" / f"{key[:24]}.jsonl.gz"
    if path.is_file():
        with gzip.open(path, "rt") as f:
            return [(m, t, i) for m, t, i in map(json.loads, f)]
    examples = build_examples(env, tasks, demos=demos, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt") as f:
        f.writelines(json.dumps(list(example)) + "\n" for example in examples)
    os.replace(tmp, path)
    return examples


def _render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    text, add_special = render_prompt(tokenizer, messages, use_chat_template=False)
    assert add_special, "the rendered prompt must not start with <bos>"
    return text


def _encode(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], list[int]]]:
    """Token ids of prompts (with ``<bos>``, as HFPolicy encodes them) and of targets."""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    return list(zip(prompts, targets, strict=True))


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``<bos> prompt target`` rows; labels only on the target."""
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        labels[i, len(p):n] = torch.tensor(t)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _length_batches(rows: Sequence[tuple[list[int], list[int]]], batch_size: int,
                    rng: np.random.Generator) -> Iterator[list[int]]:
    """Endless epochs of shuffled batches of similar lengths: each epoch is shuffled, cut into
    pools of 16 batches, each pool sorted by length and cut into batches, which are shuffled.
    Padding then wastes a few percent of the compute instead of half."""
    lengths = [len(p) + len(t) for p, t in rows]
    pool = 16 * batch_size
    while True:
        order = rng.permutation(len(rows)).tolist()
        batches: list[list[int]] = []
        for i in range(0, len(order), pool):
            chunk = sorted(order[i:i + pool], key=lengths.__getitem__)
            batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        for b in rng.permutation(len(batches)).tolist():
            yield batches[b]


def _reply_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on target tokens only; the LM head runs on those positions alone (most
    of a prompt is context, and the head is a quarter of a tiny model's compute)."""
    hidden = model.model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits, labels[keep])


# ---------------------------------------------------------------------------- evaluation


def evaluate(policy: Any, env: AgentEnvironment, tasks: Sequence[Task], samples: int = 1,
             temperature: float = 0.0, max_turns: int = DEFAULT_MAX_TURNS, seed: int = 0,
             max_tokens: int = MAX_REPLY_TOKENS) -> dict[str, Any]:
    """Play ``samples`` episodes per task with ``policy`` (greedy at temperature 0), batched:
    one ``policy.propose`` call per turn for every active episode. An episode ends when the
    game does or after ``max_turns`` replies (rejected ones count).

    Returns ``success`` (fraction of tasks won by at least one episode), ``episode_success``
    (fraction of episodes won), ``valid_reply_rate``, ``mean_turns`` and per-task ``won``
    counts.
    """
    if samples < 1 or max_turns < 1:
        raise ValueError("need samples >= 1 and max_turns >= 1")
    if temperature == 0 and samples > 1:
        raise ValueError("greedy episodes are all the same: use samples=1 at temperature 0")
    from ..episodes import play_episodes

    try:
        groups = play_episodes(env, policy, [(task, env.reset(task)) for task in tasks],
                               n=samples, max_turns=max_turns, max_step_tokens=max_tokens,
                               temperature=temperature, seed=seed)
    finally:
        env.close()
    states = [episode.state for group in groups for episode in group]
    replies = sum(len(s.turns) for s in states)
    invalid = sum(s.invalid for s in states)
    won = [sum(e.state.won for e in group) for group in groups]
    return {
        "tasks": len(tasks), "samples": samples, "temperature": temperature,
        "max_turns": max_turns,
        "success": float(np.mean([w > 0 for w in won])) if tasks else 0.0,
        "episode_success": float(np.mean([s.won for s in states])) if states else 0.0,
        "valid_reply_rate": 1.0 - invalid / replies if replies else 0.0,
        "mean_turns": float(np.mean([len(s.turns) for s in states])) if states else 0.0,
        "won": won,
    }


# ---------------------------------------------------------------------------- training


def train(
    out_dir: str | Path,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    train_games: int = 1600,
    demos: int = 3,
    batch_size: int = 32,
    lr: float = 3e-3,
    warmup_steps: int = 30,
    hidden_size: int = 128,
    layers: int = 4,
    vocab_size: int = 2048,
    eval_games: int = 50,
    eval_samples: int = 4,
    eval_every: int = 0,
    threads: int = 2,
    log_every: int = 25,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train a tiny agent from scratch, evaluate it on held-out games and save it.

    Writes the model and tokenizer (``save_pretrained``, safetensors, float32) and
    ``training.json`` (settings, data sizes, loss, training seconds, greedy success and the
    success of ``eval_samples`` episodes at temperature 1 on ``eval_games`` test games) to
    ``out_dir``, and returns the ``training.json`` content. ``eval_every`` > 0 also measures
    greedy success every that many steps (``history``; greedy play draws no random numbers,
    so the trained weights do not change).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = tiny_agent_environment(cache_dir=cache_dir)
    with torch_threads(threads):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        start = time.perf_counter()
        tasks = env.tasks(train_games, split="train")
        test_tasks = env.tasks(eval_games, split="test")
        games_seconds = time.perf_counter() - start
        start = time.perf_counter()
        raw = cached_examples(env, tasks, demos=demos, seed=seed)
        data_seconds = time.perf_counter() - start

        transcripts = [_render(_BosOnly, messages) for messages, _, _ in raw]
        tokenizer = build_tokenizer(
            sorted(set(transcripts)) + sorted({t for _, t, _ in raw}), vocab_size=vocab_size)
        examples = [Example(_render(tokenizer, m), target, task_id)
                    for (m, target, task_id) in raw]
        rows = _encode(tokenizer, examples)
        longest = max(len(p) + len(t) for p, t in rows)
        if longest > MAX_POSITIONS:
            raise ValueError(f"a training sequence has {longest} tokens > {MAX_POSITIONS}")
        log.info("%d games, %d examples (%.0f s to play), longest %d tokens, mean %.0f",
                 len(tasks), len(rows), data_seconds, longest,
                 np.mean([len(p) + len(t) for p, t in rows]))

        model = build_model(tokenizer, hidden_size=hidden_size, layers=layers, seed=seed)
        n_params = sum(p.numel() for p in model.parameters())
        batches = (_batch([rows[i] for i in indices], tokenizer.pad_token_id)
                   for indices in _length_batches(rows, batch_size, np.random.default_rng(seed)))

        def greedy_success() -> dict[str, float]:
            return {"greedy_success": evaluate(HFPolicy(model, tokenizer), env,
                                               test_tasks)["success"]}

        start = time.perf_counter()
        # linear warm-up, then cosine decay to 10 %: a stop part-way still ends on a low rate
        losses, history, tokens = fit(
            model, batches, steps=steps, lr=lr,
            lr_scale=lambda s: _lr_scale(s, warmup_steps, steps), log_every=log_every,
            eval_every=eval_every, evaluate=greedy_success, loss=_reply_loss,
            eval_last=False)  # the last step is evaluated below, with samples
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        policy = HFPolicy(model, tokenizer)
        greedy = evaluate(policy, env, test_tasks)
        sampled = evaluate(policy, env, test_tasks, samples=eval_samples, temperature=1.0,
                           seed=seed) if eval_samples else None
        eval_seconds = time.perf_counter() - start
        model.eval()
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        for saved in out.iterdir():  # safetensors writes 0600: others could not load a copy
            saved.chmod(0o644)
        tail = losses[-min(len(losses), 25):]
        report: dict[str, Any] = {
            "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr,
            "warmup_steps": warmup_steps, "threads": threads, "parameters": n_params,
            "model": {"hidden_size": hidden_size, "layers": layers, "vocab_size": len(tokenizer),
                      "max_positions": MAX_POSITIONS},
            "game": env.game.settings, "environment": prompt_settings(env),
            "data": {"train_games": len(tasks), "split": "train", "demos_per_game": demos,
                     "noise": [_noise(d) for d in range(demos)], "examples": len(rows),
                     "longest_tokens": longest,
                     "mean_tokens": round(float(np.mean([len(p) + len(t) for p, t in rows])), 1)},
            "final_loss": float(np.mean(tail)) if tail else None,
            "train_tokens": tokens,
            "eval": {
                "games": len(test_tasks), "split": "test", "max_turns": greedy["max_turns"],
                "greedy_success": greedy["success"],
                "greedy_valid_reply_rate": greedy["valid_reply_rate"],
                "greedy_mean_turns": greedy["mean_turns"],
                **({f"success@{eval_samples}_t1": sampled["success"],
                    "episode_success_t1": sampled["episode_success"],
                    "valid_reply_rate_t1": sampled["valid_reply_rate"]} if sampled else {}),
            },
            "history": history,
            "games_seconds": round(games_seconds, 1),
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(eval_seconds, 1),
            "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                         "textworld": _version("textworld")},
        }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


class _BosOnly:
    """Stands in for the tokenizer before it exists: rendering only reads ``bos_token``."""

    bos_token = "<bos>"
    chat_template = None


def _lr_scale(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train, evaluate and save a tiny agent."""
    parser = argparse.ArgumentParser(
        prog="python -m mcts_agent.models.tiny_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"optimizer steps (default {DEFAULT_STEPS}: the shipped checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-games", type=int, default=1600)
    parser.add_argument("--demos", type=int, default=3, help="demonstrations per game")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--eval-games", type=int, default=50)
    parser.add_argument("--eval-samples", type=int, default=4,
                        help="episodes per game at temperature 1 (0: greedy only)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also log held-out greedy success every N steps (0: only at the end)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="TextWorld game cache (default $MCTS_AGENT_CACHE/textworld)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    start = time.perf_counter()
    report = train(args.out, steps=args.steps, seed=args.seed, train_games=args.train_games,
                   demos=args.demos, batch_size=args.batch_size, lr=args.lr,
                   hidden_size=args.hidden_size,
                   eval_games=args.eval_games, eval_samples=args.eval_samples,
                   eval_every=args.eval_every, threads=args.threads, cache_dir=args.cache_dir)
    print(json.dumps({**report["eval"], "final_loss": report["final_loss"],
                      "train_seconds": report["train_seconds"],
                      "total_seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
