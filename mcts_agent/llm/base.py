"""The policy contract: what the search asks of a language model, whatever serves it.

A search wave turns every leaf of every tree into one :class:`GenerationRequest` and hands the whole
list to :meth:`Policy.propose` in a single call, so a backend can batch across trees. Each request
comes back as ``n`` :class:`Candidate` steps.

Accounting of a candidate (the same in every backend):

* ``token_ids`` are the generated tokens the candidate consumed: everything up to and including the
  token that completed the first stop string, or the EOS token, or ``max_tokens`` tokens.
* ``logprob`` is the sum, over exactly those ``token_ids``, of the model's log-probabilities at
  temperature 1 (the raw log-softmax of its logits, before temperature or top-p), so a step that
  ends in a delimiter pays for the delimiter, and priors do not depend on how it was sampled.
* ``num_tokens == len(token_ids)``.
* ``text`` is the decoded text of ``token_ids`` without the stop string (and anything the last token
  decoded to after it) and without the EOS token.
* Stop strings are looked for in the generated text only, never in the prompt; the first one to be
  completed wins (the earliest in the text, then the shortest, when one token completes several).
  ``stop_reason`` names it. This matches vLLM's defaults (stop string out of the text, its tokens
  in the token ids, raw log-probabilities).

Context: every request gets its own token budget, ``min(max_tokens, context - its prompt's
length)``, whatever else is in the batch. A prompt with no room left for even one new token is
not sent to the model: its ``n`` candidates are empty, with finish reason
``"prompt_too_long"`` (:func:`prompt_too_long`), so the caller can tell "the model said nothing"
from "the model was never asked".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Message = Mapping[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""

Prompt = str | Sequence[Message]
"""Plain text (used as is) or a list of chat messages (rendered by the backend's chat template)."""

FinishReason = Literal["stop", "length", "eos", "prompt_too_long"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "eos", "prompt_too_long")


def _check_prompt(prompt: object) -> None:
    """Raise ValueError unless ``prompt`` is a str or a non-empty list of role/content messages."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, Sequence) or not prompt:
        raise ValueError(
            "prompt must be a str or a non-empty list of {'role': str, 'content': str} messages, "
            f"got {type(prompt).__name__}"
        )
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or not all(
            isinstance(message.get(key), str) for key in ("role", "content")
        ):
            raise ValueError(
                f"prompt message {i} must have str 'role' and 'content', got {message!r}"
            )


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue ``n`` times.

    Attributes:
        prompt: plain text (tokenized as is) or chat messages (rendered with the chat template).
        n: number of candidates to return.
        max_tokens: most tokens to generate per candidate (stop or EOS tokens included).
        temperature: sampling temperature; 0 means greedy decoding (all ``n`` candidates equal).
        top_p: nucleus sampling mass in (0, 1]; 1 keeps the whole distribution.
        stop: stop strings (e.g. the step delimiter ``"\\n"``); generation ends at the first one,
            which is cut from ``Candidate.text`` and reported in ``Candidate.stop_reason``.
        seed: makes sampling reproducible: the same seed, prompt and parameters give the same
            candidates, whatever else is in the batch. ``None`` draws fresh randomness.
        allowed: constrained decoding (off by default, ``None``): the texts a candidate may be.
            A backend that honours it (:func:`constrains_replies`; :class:`~mcts_agent.llm.hf.
            HFPolicy` does) masks every token that would leave all of ``allowed[i] + stop``
            (for each stop string) and ``allowed[i]`` + EOS, so a finished candidate's ``text``
            is one of ``allowed`` (an interactive game's admissible replies, say). Sampling,
            temperature and top-p then act on the allowed tokens only, while ``logprob`` stays
            the model's own, unconstrained log-probability. Allowed texts should not contain a
            stop string (generation would stop inside them). A backend without the capability
            ignores it.
    """

    prompt: Prompt
    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_prompt(self.prompt)
        # A list of stop strings is the natural thing to pass; keep the frozen value hashable.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        _check_int("n", self.n, minimum=1)
        _check_int("max_tokens", self.max_tokens, minimum=1)
        if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
            raise ValueError(
                f"temperature must be a number >= 0 (0 = greedy), got {self.temperature!r}"
            )
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop must hold non-empty strings, got {stop!r}")
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if self.allowed is not None:
            allowed = (self.allowed,) if isinstance(self.allowed, str) else tuple(self.allowed)
            if not allowed or not all(isinstance(a, str) and a for a in allowed):
                raise ValueError(f"allowed must be None or non-empty strings, got {allowed!r}")
            object.__setattr__(self, "allowed", allowed)

    @property
    def greedy(self) -> bool:
        """Whether this request is decoded greedily (temperature 0)."""
        return self.temperature == 0


def _check_int(name: str, value: object, *, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Candidate:
    """One generated continuation; see the module docstring for how tokens are counted.

    Attributes:
        text: generated text, without the stop string and without the EOS token.
        logprob: sum of the model's temperature-1 log-probabilities of ``token_ids``.
        num_tokens: ``len(token_ids)``.
        finish_reason: ``"stop"`` (a stop string), ``"eos"`` (the EOS token), ``"length"``
            (``max_tokens`` or the model's context reached) or ``"prompt_too_long"`` (the prompt
            alone fills the context: nothing was generated, the model was not asked).
        stop_reason: the stop string that ended the text, when ``finish_reason == "stop"``.
        token_ids: the generated tokens counted in ``logprob`` (stop-completing or EOS included).
    """

    text: str
    logprob: float
    num_tokens: int
    finish_reason: FinishReason
    stop_reason: str | None = None
    token_ids: tuple[int, ...] = ()


def prompt_too_long(n: int) -> list[Candidate]:
    """The ``n`` empty candidates of a request whose prompt leaves no room in the context."""
    return [Candidate("", 0.0, 0, "prompt_too_long")] * n


@runtime_checkable
class Policy(Protocol):
    """A batched proposer of next steps (Hugging Face, vLLM, an OpenAI-compatible server …).

    Optional capability: ``continuous_batching = True`` declares that calls made from several
    threads at once are batched together as they arrive (vLLM's engine, a server), so the
    search's asynchronous driver pays off; ``driver="auto"`` then picks it
    (:func:`continuous_batching`).
    """

    name: str

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """Return ``requests[i].n`` candidates for every request, in request order."""
        ...


def continuous_batching(policy: object) -> bool:
    """Whether ``policy`` declares that concurrent calls share the engine's running batch."""
    return getattr(policy, "continuous_batching", False) is True


def constrains_replies(policy: object) -> bool:
    """Whether ``policy`` declares (``constrained_decoding = True``) that it honours
    :attr:`GenerationRequest.allowed`."""
    return getattr(policy, "constrained_decoding", False) is True


def check_requests(requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
    """Return ``requests`` as a list, raising TypeError on anything that is not a request.

    Field values are already checked when a request is built (ValueError there).
    """
    if isinstance(requests, GenerationRequest):
        raise TypeError("propose() takes a sequence of GenerationRequest, not a single request")
    checked = list(requests)
    for i, request in enumerate(checked):
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"requests[{i}] is {type(request).__name__}, not GenerationRequest")
    return checked


def sample_seed(base: int, sample: int) -> int:
    """An independent 64-bit seed for sample ``sample`` of a request seeded with ``base``.

    Every backend samples candidate ``j`` of a request from its own seed, so candidate ``j`` is
    the same whatever ``n`` is and whatever else is in the batch."""
    import numpy as np  # here: the contract itself imports nothing heavy

    return int(np.random.SeedSequence((base, sample)).generate_state(1, dtype=np.uint64)[0])


def prefix_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Indices of ``prompts`` (token ids) in lexicographic order: a depth-first walk of their
    prefix trie, so prompts sharing a prefix sit next to each other and an engine with a prefix
    cache (vLLM) computes each shared block once while it is still cached."""
    return sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
