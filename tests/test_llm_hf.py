"""The Hugging Face policy backend, on a tiny char-level Llama trained in the fixture.

The model learns two kinds of documents: ``"hi: abc\\ndef\\n<eos>"`` (deterministic: greedy output,
stop strings and finish reasons are predictable) and ``"r: " + 6 random letters of "abcde" +
"\\n<eos>"`` (uncertain: samples differ between seeds).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mcts_agent.llm import Candidate, GenerationRequest, HFPolicy, Policy

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 \n:?=+-*.,!")
PAD, BOS, EOS = 0, 1, 2
# Renders [{"role": "user", "content": "hi"}] as "<bos>hi:", a prompt the model knows.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}:{% endif %}"
)


def greedy(prompt: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(prompt, temperature=0, **kwargs)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, BOS added to every text, decoded without separators."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # (?m): dotall
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", BOS)]
    )
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def train(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int = 300) -> None:
    """Teach the two document kinds (a few seconds on one thread)."""
    rng = random.Random(0)

    def document() -> list[int]:
        text = "hi: abc\ndef\n"
        if rng.random() < 0.5:
            text = "r: " + "".join(rng.choice("abcde") for _ in range(6)) + "\n"
        return [*tokenizer(text).input_ids, EOS]

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        batch = [document() for _ in range(32)]
        width = max(map(len, batch))
        ids = torch.tensor([d + [PAD] * (width - len(d)) for d in batch])
        labels = torch.tensor([d + [-100] * (width - len(d)) for d in batch])
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(CHARS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    train(model, tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy(model_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(model_dir, device="cpu", batch_size=64)


def assert_same(a: list[Candidate], b: list[Candidate]) -> None:
    """Equal candidates, up to float noise in the log-probabilities (padding changes shapes)."""
    assert [replace(c, logprob=0.0) for c in a] == [replace(c, logprob=0.0) for c in b]
    assert [c.logprob for c in a] == pytest.approx([c.logprob for c in b], abs=1e-4)


def teacher_forced_logprob(policy: HFPolicy, prompt_ids: list[int], tokens: Sequence[int]) -> float:
    """Sum of log-softmax(logits) of ``tokens`` after ``prompt_ids``, in one forward pass."""
    ids = torch.tensor([[*prompt_ids, *tokens]], device=policy.device)
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].double().cpu()
    logprobs = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    return float(logprobs[positions, ids[0, len(prompt_ids) :].cpu()].sum())


def argmax_decode(policy: HFPolicy, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding by hand: full forward pass per token, no cache, no padding."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = policy.model(input_ids=torch.tensor([ids], device=policy.device)).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == EOS:
                break
    return ids[len(prompt_ids) :]


def test_is_a_policy(policy: HFPolicy) -> None:
    assert isinstance(policy, Policy)
    assert policy.name.startswith("hf:")
    assert policy.propose([]) == []


def test_shapes_and_order_across_mixed_requests(policy: HFPolicy) -> None:
    requests = [
        GenerationRequest("hi:", n=3, max_tokens=4, seed=0),
        greedy("r:", n=2, max_tokens=7),
        GenerationRequest("hi: abc\n", n=2, temperature=0.5, top_p=0.9, max_tokens=2, seed=3),
        GenerationRequest("r:", n=5, max_tokens=9, stop=("\n",), seed=4),
        greedy("hi: a", max_tokens=30),
    ]
    small_batches = HFPolicy(policy.model, policy.tokenizer, batch_size=2)
    results = small_batches.propose(requests)
    assert [len(candidates) for candidates in results] == [r.n for r in requests]
    for request, candidates in zip(requests, results, strict=True):
        assert all(isinstance(c, Candidate) for c in candidates)
        assert all(1 <= c.num_tokens == len(c.token_ids) <= request.max_tokens for c in candidates)
        # Each request alone gives the same candidates: order and seeds survive the batching.
        assert_same(policy.propose([request])[0], candidates)


def test_stop_string_cuts_text(policy: HFPolicy) -> None:
    decode = policy._decode
    (newline,), (multi,), (earliest,), (in_prompt,) = policy.propose(
        [
            greedy("hi:", stop=("\n",)),
            greedy("hi:", stop=("c\nd",)),
            greedy("hi:", stop=("def", "\n")),
            greedy("hi: abc\n", stop=["\n"]),  # the prompt's own "\n" does not count
        ]
    )
    assert (newline.text, newline.finish_reason, newline.stop_reason) == (" abc", "stop", "\n")
    assert decode(newline.token_ids) == " abc\n"  # the stop token is counted, not shown
    assert (multi.text, multi.stop_reason) == (" ab", "c\nd")
    assert decode(multi.token_ids) == " abc\nd"
    assert (earliest.text, earliest.stop_reason) == (" abc", "\n")
    assert (in_prompt.text, in_prompt.finish_reason) == ("def", "stop")
    sampled = policy.propose([GenerationRequest("r:", n=8, stop=("\n",), max_tokens=20, seed=1)])
    for candidate in sampled[0]:
        assert candidate.finish_reason == "stop"
        assert "\n" not in candidate.text
        assert decode(candidate.token_ids).endswith("\n")


def test_stop_inside_multi_character_tokens() -> None:
    """Byte-level BPE: a stop string may end inside a token ("e" in "the"); the text stops there."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["the theory of the thing is that there is nothing there\n\n", "Step 1: then\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        eos_token_id=0,
    )
    bpe_policy = HFPolicy(LlamaForCausalLM(config), tokenizer)
    stops = ("e", "th", "\n\n")
    request = GenerationRequest("the ", n=64, stop=stops, max_tokens=30, temperature=1.5, seed=0)
    ended_inside = 0
    for candidate in bpe_policy.propose([request])[0]:
        assert not any(stop in candidate.text for stop in stops)
        if candidate.finish_reason != "stop":
            continue
        decoded = bpe_policy._decode(candidate.token_ids)
        assert decoded.startswith(candidate.text + candidate.stop_reason)
        # The last kept token completes the stop: without it there is none.
        assert not any(stop in bpe_policy._decode(candidate.token_ids[:-1]) for stop in stops)
        ended_inside += decoded != candidate.text + candidate.stop_reason
    assert ended_inside > 0


def test_finish_reasons_eos_and_length(policy: HFPolicy) -> None:
    (eos,), (length,) = policy.propose([greedy("hi:", max_tokens=20), greedy("hi:", max_tokens=3)])
    assert (eos.text, eos.finish_reason, eos.stop_reason) == (" abc\ndef\n", "eos", None)
    assert eos.token_ids[-1] == EOS and eos.num_tokens == len(" abc\ndef\n") + 1
    assert (length.text, length.finish_reason, length.num_tokens) == (" ab", "length", 3)


def test_logprob_is_the_temperature_one_sum_over_kept_tokens(policy: HFPolicy) -> None:
    requests = [
        greedy("hi:", max_tokens=20),
        greedy("hi:", stop=("c\nd",)),
        greedy("hi:", max_tokens=3),
        GenerationRequest("r:", n=4, temperature=0.7, top_p=0.8, stop=("\n",), seed=5),
        GenerationRequest("r:", n=4, temperature=1.5, max_tokens=5, seed=6),
    ]
    for request, candidates in zip(requests, policy.propose(requests), strict=True):
        prompt_ids = policy.encode_prompt(request.prompt)
        for candidate in candidates:
            expected = teacher_forced_logprob(policy, prompt_ids, candidate.token_ids)
            assert candidate.logprob == pytest.approx(expected, abs=1e-4)
            assert candidate.logprob < 0


@pytest.mark.parametrize("prompt", ["hi:", "r:", "hi: abc\nde", "q", "r: ab"])
def test_greedy_is_deterministic_argmax_decoding(policy: HFPolicy, prompt: str) -> None:
    request = greedy(prompt, n=2, max_tokens=12)
    first, again = policy.propose([request])[0], policy.propose([request])[0]
    assert first == again and first[0] == first[1]
    expected = argmax_decode(policy, policy.encode_prompt(prompt), 12)
    assert list(first[0].token_ids) == expected


def test_batched_greedy_equals_one_at_a_time(policy: HFPolicy) -> None:
    prompts = ["q", "hi:", "r: abcde", "hi: abc\nd", "x", "r:", "hi: abc\ndef\n", "zz top: 1+2=?"]
    requests = [greedy(p, max_tokens=10) for p in prompts]  # prompt lengths 1..14: left padding
    batched = policy.propose(requests)
    for request, candidates in zip(requests, batched, strict=True):
        assert_same(candidates, policy.propose([request])[0])


def test_seeds(policy: HFPolicy) -> None:
    def texts(seed: int | None, n: int = 4) -> list[str]:
        request = GenerationRequest("r:", n=n, stop=("\n",), seed=seed)
        return [c.text for c in policy.propose([request])[0]]

    assert texts(7) == texts(7)
    assert texts(7) != texts(8)
    assert len(set(texts(7))) > 1  # the n samples of one request differ from each other
    assert texts(7, n=2) == texts(7)[:2]  # sample j does not depend on n
    torch.manual_seed(11)
    unseeded = texts(None)
    torch.manual_seed(11)
    assert texts(None) == unseeded  # unseeded requests follow torch's global seed


def test_tiny_top_p_keeps_only_the_mode(policy: HFPolicy) -> None:
    (mode,) = policy.propose([greedy("r:", stop=("\n",))])[0]
    nucleus = GenerationRequest("r:", n=3, temperature=2.0, top_p=1e-6, stop=("\n",), seed=2)
    assert [c.token_ids for c in policy.propose([nucleus])[0]] == [mode.token_ids] * 3


def test_chat_template(policy: HFPolicy, model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    chat = HFPolicy(policy.model, tokenizer)
    messages = [{"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<bos>hi:"
    ids = chat.encode_prompt(messages)
    assert ids == tokenizer(rendered, add_special_tokens=False).input_ids
    assert ids.count(BOS) == 1 and ids[0] == BOS  # the template's BOS, not a second one
    assert chat.encode_prompt("hi:") == policy.encode_prompt("hi:")  # plain text used as is
    assert chat.encode_prompt("<bos>hi:") == policy.encode_prompt("hi:")
    (candidate,) = chat.propose([greedy(messages, stop=("\n",))])[0]
    assert (candidate.text, candidate.stop_reason) == (" abc", "\n")

    transcript = HFPolicy(policy.model, tokenizer, chat_template=False)
    assert transcript.encode_prompt(messages) == policy.encode_prompt("user: hi\nassistant: ")
    with pytest.raises(ValueError, match="no chat_template"):
        HFPolicy(policy.model, policy.tokenizer, chat_template=True)


def test_dtype_and_device(model_dir: Path) -> None:
    half = HFPolicy.from_pretrained(model_dir, device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16 and half.device.type == "cpu"
    (candidate,) = half.propose([greedy("hi:", stop=("\n",))])[0]
    assert candidate.finish_reason in {"stop", "length", "eos"}
    with pytest.raises(ValueError, match="dtype must be one of"):
        HFPolicy.from_pretrained(model_dir, device="cpu", dtype="float8")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"n": 1.5}, "n must be an int >= 1"),
        ({"max_tokens": 0}, "max_tokens must be an int >= 1"),
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"stop": ("",)}, "stop must hold non-empty strings"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"prompt": []}, "prompt must be a str or a non-empty list"),
        ({"prompt": [{"role": "user"}]}, "prompt message 0 must have str 'role' and 'content'"),
        ({"prompt": 3}, "prompt must be a str or a non-empty list"),
    ],
)
def test_invalid_requests_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationRequest(**{"prompt": "hi:", **kwargs})


def test_propose_rejects_what_is_not_a_request_list(policy: HFPolicy) -> None:
    with pytest.raises(TypeError, match="not a single request"):
        policy.propose(greedy("hi:"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"requests\[1\] is str"):
        policy.propose([greedy("hi:"), "hi:"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size must be"):
        HFPolicy(policy.model, policy.tokenizer, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_contract(model_dir: Path) -> None:
    gpu = HFPolicy.from_pretrained(model_dir, device="cuda")
    assert gpu.device.type == "cuda" and gpu.model.dtype == torch.float32
    requests = [
        greedy("hi:", max_tokens=20),
        greedy("hi: abc\nd", stop=("\n",)),
        GenerationRequest("r:", n=4, temperature=0.8, top_p=0.9, stop=("\n",), seed=3),
    ]
    batched = gpu.propose(requests)
    assert batched[0][0].text == " abc\ndef\n" and batched[1][0].text == "ef"
    for request, candidates in zip(requests, batched, strict=True):
        assert_same(candidates, gpu.propose([request])[0])
        prompt_ids = gpu.encode_prompt(request.prompt)
        for candidate in candidates:
            expected = teacher_forced_logprob(gpu, prompt_ids, candidate.token_ids)
            assert candidate.logprob == pytest.approx(expected, abs=1e-3)


def test_generation_stops_at_the_model_context(policy: HFPolicy) -> None:
    context = policy.model.config.max_position_embeddings
    prompt = "ab" * ((context - 6) // 2)
    used = len(policy.encode_prompt(prompt))
    [[near]] = policy.propose([greedy(prompt, max_tokens=50, stop=("never",))])
    assert near.num_tokens <= context - used
    assert near.finish_reason in ("length", "eos")
    [[full]] = policy.propose([greedy("ab" * context, max_tokens=5)])
    assert full == Candidate("", 0.0, 0, "prompt_too_long", None, ())
