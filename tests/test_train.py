"""Real TRL training steps on the shipped tiny reasoner (CPU): step boundaries, weights, SFT."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig

from mcts_agent.models.tiny import TINY_ARITH_DIR, load_tiny_reasoner
from mcts_agent.train import StepDPOTrainer, TrainConfig, strip_turn_end, train_policy

PROMPT = "Q: 3+9*3=?\n"
STEP = {"prompt": PROMPT, "chosen": "Step 1: 9*3=27\n", "rejected": "Step 1: 3+9=12\n",
        "chosen_terminal": False, "rejected_terminal": False, "confidence": 1.0}
FINAL = {"prompt": PROMPT + "Step 1: 9*3=27\nStep 2: 3+27=30\n", "chosen": "Answer: 30\n",
         "rejected": "Answer: 31\n", "chosen_terminal": True, "rejected_terminal": True,
         "confidence": 0.0}
FAST = dict(threads=1, batch_size=4, learning_rate=1e-3, epochs=1, max_length=128)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny batches: avoid OpenMP contention with pytest's process


def _trainer(rows, tmp_path, **kwargs):
    model, tokenizer = load_tiny_reasoner()
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                     per_device_train_batch_size=2, save_strategy="no")
    return StepDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, **kwargs), tokenizer


def test_no_eos_is_taught_after_an_intermediate_step(tmp_path):
    trainer, tokenizer = _trainer([STEP, FINAL], tmp_path)
    step, final = trainer.train_dataset[0], trainer.train_dataset[1]
    eos = tokenizer.eos_token_id
    assert tokenizer.decode(step["chosen_ids"]) == "Step 1: 9*3=27\n"
    assert tokenizer.decode(step["rejected_ids"]) == "Step 1: 3+9=12\n"
    assert eos not in step["chosen_ids"] and eos not in step["rejected_ids"]
    assert final["chosen_ids"][-1] == eos and final["rejected_ids"][-1] == eos
    assert tokenizer.decode(final["chosen_ids"][:-1]) == "Answer: 30\n"
    assert tokenizer.decode(step["prompt_ids"], skip_special_tokens=True) == PROMPT


def test_strip_turn_end_keeps_the_steps_own_delimiter():
    _, tokenizer = load_tiny_reasoner()
    special = frozenset(tokenizer.all_special_ids)
    ids = tokenizer("27\n", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    assert strip_turn_end([*ids, eos], special, tokenizer) == ids
    # a chat template's end of turn: special token then a newline
    assert strip_turn_end([*ids, eos, ids[-1]], special, tokenizer) == ids
    assert strip_turn_end(ids, special, tokenizer) == ids


@pytest.mark.parametrize("column", ["confidence", "margin"])
def test_pair_weights_draw_pairs_by_a_column(tmp_path, column):
    rows = [{**STEP, column: 1.0}, {**FINAL, column: 0.0}] * 4
    trainer, _ = _trainer(rows, tmp_path, pair_weights=column)
    drawn = list(trainer._get_train_sampler())
    assert len(drawn) == 8 and all(i % 2 == 0 for i in drawn)  # weight 0 is never drawn
    with pytest.raises(ValueError, match=column):
        _trainer([{k: v for k, v in STEP.items() if k != column}], tmp_path, pair_weights=column)


def _margin(model_dir, row):
    """log π(chosen) − log π(rejected) given the prompt."""
    model, tokenizer = load_tiny_reasoner(model_dir)

    def logp(text):
        ids = tokenizer(row["prompt"] + text, return_tensors="pt")["input_ids"]
        start = len(tokenizer(row["prompt"])["input_ids"])
        with torch.no_grad():
            logits = model(ids).logits.log_softmax(-1)
        return sum(logits[0, i - 1, ids[0, i]].item() for i in range(start, ids.shape[1]))

    return logp(row["chosen"]) - logp(row["rejected"])


def test_dpo_training_prefers_the_chosen_step_and_saves_a_loadable_model(tmp_path):
    report = train_policy(TINY_ARITH_DIR, [STEP, FINAL] * 8, tmp_path / "m",
                          TrainConfig(**FAST, beta=0.5, nll_weight=0.5))
    assert report.steps == 4 and report.rows == 16 and report.loss > 0
    saved = json.loads((tmp_path / "m" / "training.json").read_text())
    assert saved["config"]["nll_weight"] == 0.5
    for row in (STEP, FINAL):
        assert _margin(tmp_path / "m", row) > _margin(TINY_ARITH_DIR, row)


def test_sft_trains_on_whole_solutions(tmp_path):
    row = {"prompt": PROMPT, "completion": "Step 1: 9*3=27\nStep 2: 3+27=30\nAnswer: 30\n"}
    report = train_policy(TINY_ARITH_DIR, [row] * 8, tmp_path / "s",
                          TrainConfig(**{**FAST, "method": "sft"}))
    assert report.method == "sft" and report.steps == 2
    model, tokenizer = load_tiny_reasoner(tmp_path / "s")
    assert model.config.vocab_size == len(tokenizer)


def test_bad_rows_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no dpo rows"):
        train_policy(TINY_ARITH_DIR, [], tmp_path, TrainConfig(**FAST))
    with pytest.raises(ValueError, match="missing"):
        train_policy(TINY_ARITH_DIR, [{"prompt": "a", "chosen": "b"}], tmp_path,
                     TrainConfig(**FAST))


def test_chat_rows_lose_the_end_of_turn_only_after_intermediate_steps(tmp_path):
    model, tokenizer = load_tiny_reasoner()
    # a minimal chat template in the tiny vocabulary: an assistant turn ends with "<eos>\n"
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}\n{% endif %}{% endfor %}")
    rows = [{"prompt": [{"role": "user", "content": PROMPT}],
             "chosen": [{"role": "assistant", "content": "Step 1: 9*3=27\n"}],
             "rejected": [{"role": "assistant", "content": "Step 1: 3+9=12\n"}],
             "chosen_terminal": term, "rejected_terminal": term} for term in (False, True)]
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                     per_device_train_batch_size=2, save_strategy="no")
    trainer = StepDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    step, final = trainer.train_dataset[0], trainer.train_dataset[1]
    assert tokenizer.decode(step["chosen_ids"]) == "Step 1: 9*3=27\n"
    assert tokenizer.decode(final["chosen_ids"]) == "Step 1: 9*3=27\n<eos>\n"
