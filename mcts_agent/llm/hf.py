"""Hugging Face transformers backend: batched sampling of candidate steps on CPU or GPU.

How a :meth:`HFPolicy.propose` call runs:

* Every request becomes ``n`` rows (one row for a greedy request, copied ``n`` times afterwards).
  Rows of *all* requests share ``generate`` calls, whatever their sampling parameters: rows are
  sorted by ``(budget, prompt length)`` and cut into chunks of at most ``batch_size``, each chunk
  left-padded with an attention mask and decoded with the KV cache.
* Every row has its own token budget, ``min(max_tokens, context - its prompt length)``, and a
  chunk only takes rows whose padded width plus the largest budget fits the model's context
  (``max_position_embeddings``), so one long prompt never cuts another request's steps short.
  A prompt with no room for one new token is not run: ``"prompt_too_long"`` candidates.
* Sampling is ours, not ``generate``'s: ``generate`` runs greedy over scores that our logits
  processor has already reduced to the token it chose. That processor sees the model's raw logits,
  records their log-softmax for the chosen token (the temperature-1 log-probability the priors
  need), and chooses per row: argmax for temperature 0, else inverse-CDF sampling from the
  temperature-scaled, top-p-truncated distribution with one uniform draw from the row's own
  seeded CPU ``torch.Generator``. Rows therefore do not share a random stream: a seeded request
  gives the same candidates alone or in any batch (up to float differences that padding can cause),
  and sample ``j`` of ``n`` is the same whatever ``n`` is. Unseeded requests draw their seed from
  torch's global RNG, so ``torch.manual_seed`` makes them reproducible too.
* Stop strings are per request: a stopping criterion checks the decoded tail of every row after
  each step and ends the rows that completed one; candidates are then rebuilt from the tokens alone
  (first stop, else EOS, else ``max_tokens``) as described in :mod:`mcts_agent.llm.base`.
* Constrained decoding (``GenerationRequest.allowed``, off by default): before a constrained row
  chooses, every token that would take its text off all of its allowed texts (each followed by a
  stop string or EOS) gets no mass. A character trie of the vocabulary's token texts
  (:class:`_TokenTrie`, built once per policy) finds the tokens that continue a text in
  ``O(len(text))``, so the constraint costs a few dictionary look-ups per allowed text, row and
  token. Token texts are each token decoded alone, so a byte-level or character vocabulary
  spells every allowed text; a text no token sequence spells ends its row with EOS. The recorded
  log-probability stays the model's unconstrained one.
* The model's own ``generation_config`` cannot leak sampling settings (top-k, repetition penalties):
  those are set explicitly to neutral values for every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ..errors import ConfigError, ModelLoadError
from .base import (
    Candidate,
    GenerationRequest,
    Prompt,
    check_requests,
    prompt_too_long,
    sample_seed,
)
from .batching import Coalescer
from .model_folder import check_model_folder, looks_local

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class _Row:
    """One sequence to generate: a request's prompt, its parameters and the row's sampling seed."""

    request_index: int
    prompt_ids: tuple[int, ...]
    request: GenerationRequest
    seed: int | None  # None for greedy rows
    budget: int  # most new tokens: max_tokens, less where the context ends first


class _TrieNode:
    __slots__ = ("below", "children", "ids")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.ids: list[int] = []  # tokens whose text ends here
        self.below: list[int] | None = None  # every token at or under this node (cached)


class _TokenTrie:
    """The texts of a vocabulary's tokens in a character trie: which tokens continue a text."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.root = _TrieNode()
        for token, text in texts.items():
            node = self.root
            for char in text:
                node = node.children.setdefault(char, _TrieNode())
            node.ids.append(token)

    def continuing(self, rest: str, overshoot: bool) -> list[int]:
        """Tokens whose text is a non-empty prefix of ``rest``; with ``overshoot`` also those
        whose text starts with all of ``rest`` and goes on (past a stop string, which is cut)."""
        out: list[int] = []
        node = self.root
        for char in rest:
            child = node.children.get(char)
            if child is None:
                return out
            node = child
            out += node.ids
        if overshoot:
            out += [t for t in self._below(node) if t not in node.ids]
        return out

    def _below(self, node: _TrieNode) -> list[int]:
        if node.below is None:
            node.below = node.ids + [t for child in node.children.values()
                                     for t in self._below(child)]
        return node.below


class _Constraint:
    """One constrained row: the texts it may still become, and the text generated so far."""

    def __init__(self, allowed: Sequence[str], stops: Sequence[str]) -> None:
        # (target, whether a stop ends it): a stop string may overshoot (it is cut), EOS not
        self.targets = [(a + s, True) for a in dict.fromkeys(allowed) for s in stops]
        self.targets += [(a, False) for a in dict.fromkeys(allowed)]
        self.text = ""

    def tokens(self, trie: _TokenTrie, eos_ids: frozenset[int]) -> set[int]:
        """Tokens that keep the text on an allowed one (EOS once one is complete)."""
        out: set[int] = set()
        for target, by_stop in self.targets:
            if not target.startswith(self.text):
                continue
            rest = target[len(self.text):]
            if rest:
                out.update(trie.continuing(rest, overshoot=by_stop))
            elif not by_stop:
                out |= eos_ids
        return out


class _RowSampler(LogitsProcessor):
    """Chooses each row's next token itself and records its temperature-1 log-probability;
    constrained rows (``request.allowed``) choose among the tokens their constraint allows."""

    def __init__(self, rows: Sequence[_Row], device: torch.device,
                 vocabulary: Callable[[], tuple[_TokenTrie, dict[int, str]]] | None = None,
                 eos_ids: frozenset[int] = frozenset()) -> None:
        # Greedy rows get a harmless 1.0: their samples are drawn but discarded.
        self.temperature = torch.tensor([r.request.temperature or 1.0 for r in rows], device=device)
        self.top_p = torch.tensor([r.request.top_p for r in rows], device=device)
        self.sampled = torch.tensor([not r.request.greedy for r in rows], device=device)
        self.sampled_rows = [i for i, r in enumerate(rows) if not r.request.greedy]
        self.generators = {
            i: torch.Generator().manual_seed(rows[i].seed) for i in self.sampled_rows
        }
        self.truncate = any(r.request.top_p < 1 for r in rows)
        self.logprobs: list[torch.Tensor] = []  # one (rows,) tensor per generated position
        self.constraints = {i: _Constraint(r.request.allowed, r.request.stop)
                            for i, r in enumerate(rows) if r.request.allowed is not None}
        if self.constraints and vocabulary is None:
            raise ValueError("constrained rows need the vocabulary's token texts")
        self.trie, self.texts = vocabulary() if self.constraints else (None, {})
        self.eos_ids = eos_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen_from = self._constrain(scores) if self.constraints else scores
        tokens = chosen_from.argmax(dim=-1)
        if self.sampled_rows:
            tokens = torch.where(self.sampled, self._sample(chosen_from), tokens)
        logprobs = torch.log_softmax(scores, dim=-1)  # the model's own, unconstrained
        self.logprobs.append(logprobs.gather(1, tokens[:, None]).squeeze(1))
        for i, constraint in self.constraints.items():
            constraint.text += self.texts.get(int(tokens[i]), "")
        # generate() then takes the argmax, which is exactly the token chosen here.
        return torch.full_like(scores, -torch.inf).scatter_(1, tokens[:, None], 0.0)

    def _constrain(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with every token a constrained row may not write at -inf. A row with no
        allowed token left (an allowed text no token sequence spells, or a finished row) may
        only end: EOS, else its own best token."""
        masked = scores.clone()
        for i, constraint in self.constraints.items():
            allowed = constraint.tokens(self.trie, self.eos_ids) or set(self.eos_ids)
            keep = torch.tensor(sorted(t for t in allowed if t < scores.shape[-1]),
                                dtype=torch.long, device=scores.device)
            if keep.numel() == 0:
                continue
            row = torch.full_like(scores[i], -torch.inf)
            row[keep] = scores[i, keep]
            masked[i] = row
        return masked

    def _sample(self, scores: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sample of every row (greedy rows' draws are discarded by the caller)."""
        probs = torch.softmax(scores / self.temperature[:, None], dim=-1)
        if self.truncate:
            probs = _top_p(probs, self.top_p)
        cdf = probs.cumsum(dim=-1)
        uniforms = torch.zeros(scores.shape[0], dtype=cdf.dtype)
        for i in self.sampled_rows:
            uniforms[i] = torch.rand((), generator=self.generators[i])
        target = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, target, right=True).squeeze(1)
        tokens = tokens.clamp_(max=scores.shape[-1] - 1)
        # Rounding at the top of the CDF can land on a token with no mass; take the mode then.
        empty = probs.gather(1, tokens[:, None]).squeeze(1) == 0
        return torch.where(empty, probs.argmax(dim=-1), tokens)


def _top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tail outside each row's nucleus: keep the fewest top tokens with mass >= top_p."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p[:, None], 0.0)
    return torch.zeros_like(probs).scatter_(1, order, sorted_probs)


class _RowStopper(StoppingCriteria):
    """Ends rows at their own ``max_tokens``, at EOS and at their own stop strings."""

    def __init__(
        self,
        rows: Sequence[_Row],
        prompt_len: int,
        eos_ids: frozenset[int],
        decode: Callable[[Sequence[int]], str],
    ) -> None:
        self.prompt_len = prompt_len
        self.max_tokens = [r.budget for r in rows]
        self.stops = [r.request.stop for r in rows]
        self.eos_ids = eos_ids
        self.decode = decode
        longest = max((len(s) for stops in self.stops for s in stops), default=0)
        # A stop string just completed lies in the last few tokens; 4 tokens per character covers
        # characters split into byte tokens.
        self.window = 4 * longest + 4 if longest else 1
        self.done = [False] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_len
        tails = input_ids[:, -min(self.window, generated) :].tolist()
        for i, tail in enumerate(tails):
            if self.done[i]:
                continue
            self.done[i] = (
                generated >= self.max_tokens[i]
                or tail[-1] in self.eos_ids
                or self._completed_stop(i, tail, input_ids)
            )
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _completed_stop(self, i: int, tail: list[int], input_ids: torch.Tensor) -> bool:
        """Whether row ``i`` has produced one of its stop strings (the cheap tail check first)."""
        stops = self.stops[i]
        if not stops or _first_stop(self.decode(tail), stops) is None:
            return False
        return _first_stop(self.decode(input_ids[i, self.prompt_len :].tolist()), stops) is not None


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """The earliest stop string in ``text`` as ``(index, stop)`` (shorter first on ties), if any."""
    found = [(text.find(s), len(s), s) for s in stops if s in text]
    if not found:
        return None
    index, _, stop = min(found)
    return index, stop


def render_prompt(tokenizer: Any, prompt: Prompt,
                  use_chat_template: bool = True) -> tuple[str, bool]:
    """The text a prompt is tokenized from, and whether the tokenizer's special tokens (BOS) are
    added when encoding it — the one rendering every model-reading part shares (the policy, the
    reward model).

    Text is used as is, with special tokens unless it already starts with the BOS string; chat
    messages go through the chat template (with the generation prompt; it carries its own
    special tokens), or without one become a ``role: content`` transcript ending in
    ``assistant: ``."""
    if isinstance(prompt, str):
        bos = getattr(tokenizer, "bos_token", None)
        return prompt, not (bos and prompt.startswith(bos))
    messages = [dict(m) for m in prompt]
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True), False
    transcript = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return render_prompt(tokenizer, transcript)


def encode_prompt(tokenizer: Any, prompt: Prompt, use_chat_template: bool = True) -> list[int]:
    """Token ids of ``prompt`` as every backend that tokenizes locally sends it (HF, vLLM, an
    OpenAI-compatible server given the tokenizer): :func:`render_prompt`, then the tokenizer
    with the model's special tokens exactly once."""
    text, add_special_tokens = render_prompt(tokenizer, prompt, use_chat_template)
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    if not ids:
        raise ValueError(f"prompt {text[:40]!r} encodes to no tokens")
    return list(ids)


class HFPolicy:
    """A :class:`~mcts_agent.llm.base.Policy` over a transformers causal LM.

    Args:
        model: a causal LM (``AutoModelForCausalLM``); put in eval mode.
        tokenizer: its tokenizer.
        device: where to run (moved there); ``None`` keeps the model where it is.
        dtype: cast the model to this dtype (``"float32"``, ``"bfloat16"``, ``torch.float16`` …);
            ``None`` keeps its dtype.
        batch_size: most rows (prompt copies) per ``generate`` call; bounds memory.
        chat_template: how message-list prompts are rendered. ``None``: the tokenizer's chat
            template if it has one, else a plain ``"role: content"`` transcript; ``True``: the chat
            template, required; ``False``: always the transcript. Plain text is used as is.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 64,
        chat_template: bool | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template is True and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat_template")
        if device is not None:
            model = model.to(check_device(device))
        if dtype is not None:
            model = model.to(_resolve_dtype(dtype))
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.use_chat_template = has_template and chat_template is not False
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = _pad_id(tokenizer, self.eos_ids)
        self.name = f"hf:{getattr(model, 'name_or_path', '') or type(model).__name__}"
        self._batches = Coalescer(self._propose)
        self._vocabulary: tuple[_TokenTrie, dict[int, str]] | None = None

    constrained_decoding = True
    """Honours :attr:`GenerationRequest.allowed` (see the module doc)."""

    def vocabulary(self) -> tuple[_TokenTrie, dict[int, str]]:
        """The token texts (each token decoded alone; special tokens left out) and their trie,
        built on first use (a few milliseconds per thousand tokens)."""
        if self._vocabulary is None:
            special = set(getattr(self.tokenizer, "all_special_ids", ()) or ())
            texts = {t: self._decode([t]) for t in range(len(self.tokenizer))
                     if t not in special and t not in self.eos_ids}
            texts = {t: text for t, text in texts.items() if text and "\ufffd" not in text}
            self._vocabulary = (_TokenTrie(texts), texts)
        return self._vocabulary

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 64,
        chat_template: bool | None = None,
        **model_kwargs: Any,
    ) -> HFPolicy:
        """Load a saved model folder (or hub id, where a hub is reachable).

        Args:
            path: a ``save_pretrained`` folder.
            device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
            dtype: ``"auto"`` (the checkpoint's dtype on GPU, float32 on CPU, where half precision
                is slow), ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``.
            batch_size, chat_template: as in :class:`HFPolicy`.
            **model_kwargs: passed to ``AutoModelForCausalLM.from_pretrained``.

        Raises:
            ModelLoadError: the device does not exist here, or ``path`` is not a loadable model
                (missing, not a model folder, no weights, damaged weights, no tokenizer).
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = check_device(device)
        if dtype == "auto":
            dtype = "auto" if resolved.type == "cuda" else torch.float32
        else:
            dtype = _resolve_dtype(dtype)
        if looks_local(path):
            path = check_model_folder(path)
        with _load_errors(path, "tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(path)
        with _load_errors(path, "model"):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **model_kwargs)
        return cls(
            model, tokenizer, device=resolved, batch_size=batch_size, chat_template=chat_template
        )

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self.model.device

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, with the model's special tokens exactly once (see
        :func:`encode_prompt`)."""
        return encode_prompt(self.tokenizer, prompt, self.use_chat_template)

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """Generate ``n`` candidates per request, batched across all requests (see module doc).

        Calls from several threads (the async driver, search cohorts) share batches: the model
        runs one batch at a time, and calls made while it runs join the next one
        (:class:`~mcts_agent.llm.batching.Coalescer`)."""
        return self._batches(requests)

    @torch.inference_mode()
    def _propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        requests = check_requests(requests)
        results: list[list[Candidate]] = [[] for _ in requests]
        rows: list[_Row] = []
        for index, request in enumerate(requests):
            prompt_ids = tuple(self.encode_prompt(request.prompt))
            budget = self._budget(request, len(prompt_ids))
            if budget < 1:  # nothing can follow: the model is not asked
                results[index] = prompt_too_long(1 if request.greedy else request.n)
                continue
            rows.extend(self._rows(index, prompt_ids, request, budget))
        for chunk in self._chunks(rows):
            for row, candidate in zip(chunk, self._generate(chunk), strict=True):
                results[row.request_index].append(candidate)
        # A stable sort keeps each request's samples in order; a greedy request ran once.
        return [
            candidates * request.n if request.greedy else candidates
            for candidates, request in zip(results, requests, strict=True)
        ]

    @property
    def context(self) -> int | None:
        """The model's context in tokens (prompt + generation), where its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def _budget(self, request: GenerationRequest, prompt_len: int) -> int:
        """New tokens this request may have: past the trained context a model emits garbage."""
        if self.context is None:
            return request.max_tokens
        return min(request.max_tokens, self.context - prompt_len)

    def _rows(self, index: int, prompt_ids: tuple[int, ...], request: GenerationRequest,
              budget: int) -> list[_Row]:
        """One row per sample (one per greedy request), each with its own sampling seed."""
        if request.greedy:
            return [_Row(index, prompt_ids, request, None, budget)]
        base = request.seed
        if base is None:  # from torch's global RNG, so torch.manual_seed still governs it
            base = int(torch.randint(0, 2**62, ()).item())
        return [_Row(index, prompt_ids, request, sample_seed(base, j), budget)
                for j in range(request.n)]

    def _chunks(self, rows: Sequence[_Row]) -> list[list[_Row]]:
        """Rows cut into ``generate`` calls; rows of one budget and similar lengths together."""
        chunks: list[list[_Row]] = []
        for row in sorted(rows, key=lambda r: (r.budget, len(r.prompt_ids))):
            if not chunks or not self._fits(chunks[-1], row):
                chunks.append([])
            chunks[-1].append(row)
        return chunks

    def _fits(self, chunk: list[_Row], row: _Row) -> bool:
        """Whether ``row`` can join ``chunk``: at most ``batch_size`` rows, and the padded width
        plus the largest budget within the context, so no prompt cuts another row's budget."""
        if len(chunk) == self.batch_size:
            return False
        if self.context is None:
            return True
        joined = (*chunk, row)
        return max(len(r.prompt_ids) for r in joined) + max(r.budget for r in joined) <= (
            self.context)

    def _generate(self, rows: Sequence[_Row]) -> list[Candidate]:
        """Run one left-padded ``generate`` call for ``rows`` and rebuild their candidates."""
        input_ids, attention_mask = self._left_pad([r.prompt_ids for r in rows])
        prompt_len = input_ids.shape[1]
        new_tokens = max(r.budget for r in rows)
        sampler = _RowSampler(rows, self.device, self.vocabulary, self.eos_ids)
        stopper = _RowStopper(rows, prompt_len, self.eos_ids, self._decode)
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._generation_config(new_tokens),
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([stopper]),
        )
        generated = sequences[:, prompt_len:].tolist()
        logprobs = torch.stack(sampler.logprobs, dim=1).double().cpu()
        return [
            self._candidate(row, ids, logprobs[i])
            for i, (row, ids) in enumerate(zip(rows, generated, strict=True))
        ]

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad prompts to one length; the mask hides the padding from attention."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            input_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[i, width - len(prompt) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        """Plain greedy decoding over our processed scores, with no inherited score processing.

        ``generate`` fills every unset field from the model's ``generation_config``. Sampling
        warpers (temperature, top-k, top-p) only run when ``do_sample`` is on, so they cannot
        leak; the processors that run in greedy mode too and that checkpoints do set (repetition
        penalties, n-gram bans, ``min_length``) are set to neutral values here, so our sampler
        sees the raw logits.
        """
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            num_return_sequences=1,
            use_cache=True,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.pad_id,
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
        )

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _candidate(self, row: _Row, generated: list[int], logprobs: torch.Tensor) -> Candidate:
        """Rebuild a candidate from a row's generated ids: first stop, else EOS, else length."""
        request = row.request
        span = generated[: row.budget]
        eos_at = next((i for i, t in enumerate(span) if t in self.eos_ids), None)
        body = span if eos_at is None else span[:eos_at]
        text = self._decode(body)
        stop_reason = None
        if request.stop and _first_stop(text, request.stop) is not None:
            kept = body[: self._stop_cut(body, request.stop)]
            index, stop_reason = _first_stop(self._decode(kept), request.stop)
            text, finish = self._decode(kept)[:index], "stop"
        elif eos_at is not None:
            kept, finish = span[: eos_at + 1], "eos"
        else:
            kept, finish = span, "length"
        return Candidate(
            text=text,
            logprob=float(logprobs[: len(kept)].sum()),
            num_tokens=len(kept),
            finish_reason=finish,
            stop_reason=stop_reason,
            token_ids=tuple(kept),
        )

    def _stop_cut(self, ids: Sequence[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens of ``ids`` whose text holds a stop string (binary search)."""
        low, high = 1, len(ids)
        while low < high:
            mid = (low + high) // 2
            if _first_stop(self._decode(ids[:mid]), stops) is None:
                low = mid + 1
            else:
                high = mid
        return low


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got "
                          f"{dtype!r}")
    return _DTYPES[dtype]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, checked to exist on this machine before anything is
    loaded onto it; ModelLoadError (one line, what to use instead) otherwise."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ModelLoadError(f"device {device!r} is not a device torch knows: use cpu, cuda, "
                             "cuda:N or auto (--device)") from err
    if resolved.type in ("cpu", "meta"):
        return resolved
    backend = getattr(torch, resolved.type, None)  # torch.cuda, torch.mps, torch.xpu …
    available = getattr(backend, "is_available", None)
    if callable(available) and not available():
        raise ModelLoadError(f"device {device!r} is not available here (torch "
                             f"{torch.__version__} finds no {resolved.type} device): use "
                             "--device cpu, or run where one is")
    count = getattr(backend, "device_count", None)
    if resolved.index is not None and callable(count) and resolved.index >= count():
        raise ModelLoadError(f"device {device!r} does not exist: this machine has {count()} "
                             f"{resolved.type} device(s), numbered from 0")
    return resolved


@contextmanager
def _load_errors(path: str | Path, part: str) -> Iterator[None]:
    """Turn a failed load of ``path``'s ``part`` (a file problem, whatever library reports it)
    into one ModelLoadError line."""
    try:
        yield
    except (OSError, ValueError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load the {part} of {path} ({first[:200]}): pass a folder "
                             "saved with save_pretrained (model and tokenizer)") from err


def _eos_ids(model: PreTrainedModel, tokenizer: Any) -> frozenset[int]:
    """EOS ids of the model's generation config and of the tokenizer (chat models list several)."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _pad_id(tokenizer: Any, eos_ids: frozenset[int]) -> int:
    """The pad id: the tokenizer's, else an EOS id (padding is masked, so any id would do)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    return min(eos_ids) if eos_ids else 0
