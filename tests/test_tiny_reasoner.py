"""The tiny char-level reasoner: shipped checkpoint, tokenizer, training script."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from environments.math.arith import (
    ArithConfig,
    generate,
    render_prompt,
    render_solution,
)
from environments.math.arith_env import ArithEnvironment
from mcts_agent.models.tiny import (
    EVAL_SEED,
    TINY_ARITH_DIR,
    _batch,
    arith_environment,
    build_tokenizer,
    evaluate_model,
    load_tiny_reasoner,
    pass_at_k,
    train,
)

REPO = Path(__file__).resolve().parents[1]
WELL_FORMED = re.compile(r"(Step \d+: -?\d+[-+*](-?\d+|\(-\d+\))=-?\d+\n)+Answer: -?\d+\n?")


@pytest.fixture(scope="module")
def shipped():
    return load_tiny_reasoner()


@pytest.fixture(scope="module")
def held_out():
    return ArithEnvironment().tasks(16, split="test", seed=EVAL_SEED)


def test_shipped_checkpoint_loads_offline_with_auto_classes():
    # A fresh interpreter, so that the offline switches are read at import time.
    code = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(TINY_ARITH_DIR)!r})
        model = AutoModelForCausalLM.from_pretrained({str(TINY_ARITH_DIR)!r})
        enc = tok(["Q: 3+9*3=?\\n"], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=40, do_sample=False)
        print(repr(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Answer:" in done.stdout


def test_shipped_checkpoint_is_the_documented_size_and_imperfect():
    report = json.loads((TINY_ARITH_DIR / "training.json").read_text())
    assert 1_000_000 < report["parameters"] < 1_100_000
    assert 0.30 <= report["eval"]["greedy_accuracy"] <= 0.60
    assert report["eval"]["pass@8"] > report["eval"]["greedy_accuracy"] + 0.1
    assert {p.name for p in TINY_ARITH_DIR.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def test_shipped_checkpoint_writes_well_formed_solutions(shipped, held_out):
    model, tok = shipped
    assert next(model.parameters()).dtype == torch.float32
    result = evaluate_model(model, tok, held_out, k=0)
    completions = result["greedy_completions"]
    # A partly trained model is often wrong, but it has learned the format.
    assert all(WELL_FORMED.fullmatch(c) for c in completions), completions
    assert 0.0 < result["greedy_accuracy"] < 1.0


def test_tokenizer_round_trips_one_token_per_character(shipped):
    _, tok = shipped
    p = generate(ArithConfig(paren_prob=1.0, num_operands=(4, 4)), 1, seed=5)[0]
    text = render_prompt(p) + render_solution(p) + "Step 9: 3-(-4)=7\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    assert tok.padding_side == "left"
    assert tok("Q: 1#2")["input_ids"][-2] == tok.unk_token_id


def test_loss_is_on_the_completion_only():
    tok = build_tokenizer()
    config = ArithConfig(num_operands=(2, 4))
    problems = generate(config, 4, seed=0)
    batch = _batch(tok, arith_environment(config), arith_environment(config).tasks(
        4, split="train", seed=0))
    for row, p in enumerate(problems):
        labels = batch["labels"][row]
        kept = labels[labels != -100].tolist()
        assert kept[-1] == tok.eos_token_id
        assert tok.decode(kept, skip_special_tokens=True) == render_solution(p)
        # Everything before the solution (bos and prompt) and the right padding is masked.
        n_prompt = len(render_prompt(p)) + 1
        assert (labels[:n_prompt] == -100).all()
        assert int(batch["attention_mask"][row].sum()) == n_prompt + len(kept)


def test_pass_at_k():
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(10, 5, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


def test_short_training_run_end_to_end(tmp_path):
    report = train(tmp_path / "a", steps=20, seed=1, batch_size=16, eval_problems=4, eval_k=2,
                   threads=1, log_every=0)
    saved = json.loads((tmp_path / "a" / "training.json").read_text())
    assert saved == report
    assert report["steps"] == 20 and report["seed"] == 1
    assert report["final_loss"] < 3.0  # well below the uniform guess, ln(34) ≈ 3.5
    assert 0.0 <= report["eval"]["greedy_accuracy"] <= report["eval"]["pass@2"] <= 1.0
    model, tok = load_tiny_reasoner(tmp_path / "a")
    enc = tok([render_prompt(generate(ArithConfig(), 1, seed=0)[0])], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]

    # Step-count based: the same seed gives the same weights.
    train(tmp_path / "b", steps=3, seed=1, batch_size=8, eval_problems=2, eval_k=1, threads=1)
    train(tmp_path / "c", steps=3, seed=1, batch_size=8, eval_problems=2, eval_k=1, threads=1)
    wb = load_tiny_reasoner(tmp_path / "b")[0].state_dict()
    wc = load_tiny_reasoner(tmp_path / "c")[0].state_dict()
    assert all(torch.equal(wb[name], wc[name]) for name in wb)


def test_training_data_comes_from_the_environment_as_the_generator_renders_it():
    """The trainer reaches the generator only through the registry's ``arith`` environment;
    prompts and solutions must be the generator's own text, or the shipped checkpoint's
    training would not reproduce."""
    from itertools import islice

    from environments.math.arith import iter_problems

    config = ArithConfig(num_operands=(2, 5), paren_prob=0.3)
    env = arith_environment(config)
    assert arith_environment({"num_operands": (2, 5), "paren_prob": 0.3}).settings == \
        env.settings == config.model_dump(mode="json")
    streamed = list(islice(env.task_stream("train", seed=3), 20))
    expected = list(islice(iter_problems(config, seed=3, split="train"), 20))
    assert [t.problem for t in streamed] == [p.question for p in expected]
    for task, problem in zip(streamed, expected, strict=True):
        assert env.prompt(env.reset(task)) == render_prompt(problem)
        assert env.solution(task) == render_solution(problem)
        assert env.is_correct(task, render_solution(problem))
        assert not env.is_correct(task, f"Answer: {problem.answer + 1}\n")
    held = env.tasks(5, split="test", seed=EVAL_SEED)
    assert [t.problem for t in held] == [
        p.question for p in generate(config, 5, seed=EVAL_SEED, split="test")]
