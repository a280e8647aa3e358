"""An LLM judge: a prompted model rates each state, SWE-Search's value agent on our contract.

The judge model reads the problem and the steps so far and answers with an explanation, feedback
for an alternative branch and an integer score in a declared range (SWE-Search uses −100..100 with
banded meanings, :meth:`JudgeTemplate.swe_search`; our default is 0..10, which SmolLM2-135M
followed more often). The prompt carries two short worked examples (few-shot), without which
small chat models ignore the format. The value is the score mapped to [0, 1]; the feedback goes
into :attr:`Assessment.feedback`, which the driver shows when it expands the node's siblings.

Why a judge beside rollouts: it needs no reference answer and no episode to finish, it costs one
short generation per state, and its feedback steers later expansions. Its weakness is that it is
only as good as the judge model, so it answers in a format that :func:`parse_judgment` reads
leniently (labels in any case, markdown, JSON, ``8/10``), retries malformed answers with fresh
seeds, and gives a neutral value marked ``details["unknown"]`` when nothing parses, so a poor
judge degrades the search instead of crashing it.

All uncached states of one :meth:`JudgeCritic.evaluate` call go to the policy in ONE ``propose``
(the ``samples`` self-consistency answers of a state are one request with ``n=samples``); each
round of retries is one more ``propose``. Requests are seeded from (seed, task, state), so runs
are reproducible, and assessments are cached by state (:class:`critics.cache.StateCache`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from critics.cache import StateCache
from mcts_agent.contracts import Assessment, CriticInput, content_hash, is_interactive
from mcts_agent.errors import ConfigError
from mcts_agent.llm.base import Candidate, GenerationRequest, Policy, Prompt

if TYPE_CHECKING:
    from mcts_agent.search.critic_specs import CriticContext

__all__ = [
    "DEFAULT_EXAMPLES",
    "DEFAULT_SYSTEM",
    "DEFAULT_USER",
    "JudgeCritic",
    "JudgeExample",
    "JudgeTemplate",
    "Judgment",
    "parse_judgment",
    "render_trajectory",
]

DEFAULT_SYSTEM = """\
You check step-by-step solutions: check every step written so far and rate how likely the \
steps lead to a correct final answer. Do not solve the problem again.
Score from {low} to {high}:
9-10: every step is correct and the final answer is (or will clearly be) right.
6-8: the steps are correct so far; the answer is not reached yet.
3-5: unclear: steps are missing, unchecked or off track.
0-2: a step is wrong, or the final answer is wrong.
Answer in this format:
Explanation: <one sentence; name the first wrong step, if any>
Feedback: <one sentence of advice for a different next step>
Score: <an integer from {low} to {high}>"""

DEFAULT_USER = """\
Problem: {problem}
Steps so far:
{trajectory}
Finished: {finished}"""

SWE_SEARCH_SYSTEM = """\
You are a value function that evaluates the latest state of a problem-solving attempt: are \
the steps taken so far correct, and do they move towards a solution?
Give a reward from {low} to {high}:
75 to 100: the steps are correct and significantly advance (or complete) the solution.
50 to 74: the steps are correct and contribute to solving the problem.
25 to 49: the steps are acceptable but could be better.
0 to 24: neutral or slightly off track.
-49 to -1: the steps are counterproductive.
-100 to -50: a step is wrong or the solution fails.
Answer in this format:
Explanation: <your analysis of the steps>
Feedback: <advice for an alternative next step, for a branch that tries something else>
Score: <an integer from {low} to {high}>"""

@dataclass(frozen=True)
class JudgeExample:
    """A worked example shown before the real request (few-shot): its fields fill the user
    template like a real state's, and ``answer`` is the judge's reply to it."""

    problem: str
    trajectory: str
    answer: str
    finished: bool = False


DEFAULT_EXAMPLES = (
    JudgeExample("2+3*4", "Step 1: 3*4=12",
                 "Explanation: 3*4 = 12, so step 1 is correct; the answer is not reached yet.\n"
                 "Feedback: Add 2 to 12 next.\nScore: 8"),
    JudgeExample("5*2-1", "Step 1: 5*2=11",
                 "Explanation: 5*2 = 10, not 11, so step 1 is wrong.\n"
                 "Feedback: Compute 5*2 again before going on.\nScore: 1"),
)
"""Two short shots (one right, one wrong step): small models copy the format from them."""

SWE_SEARCH_EXAMPLES = (
    JudgeExample("2+3*4", "Step 1: 3*4=12",
                 "Explanation: 3*4 = 12 is correct and does the product first, as it must.\n"
                 "Feedback: Add 2 to 12 next.\nScore: 60"),
    JudgeExample("5*2-1", "Step 1: 5*2=11",
                 "Explanation: 5*2 = 10, not 11: the solution builds on a wrong value.\n"
                 "Feedback: Compute 5*2 again before going on.\nScore: -80"),
)

log = logging.getLogger(__name__)

_PLACEHOLDERS = ("problem", "trajectory", "finished", "low", "high")
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(_PLACEHOLDERS) + r")\}")


@dataclass(frozen=True)
class JudgeTemplate:
    """How the judge is asked. Replace any field (``dataclasses.replace``) or load one from a
    JSON / YAML file (:meth:`load`).

    Attributes:
        system: the instructions (the system message of a chat prompt, the opening paragraph
            of a plain one); placeholders ``{low}``, ``{high}``.
        user: the case to judge; placeholders ``{problem}``, ``{trajectory}`` (the steps so
            far), ``{finished}`` (``yes`` / ``no``), ``{low}``, ``{high}``. Only these names
            are replaced (in both fields), so other braces (a JSON example) need no escaping.
        low, high: the declared score range; the value is ``(score − low) / (high − low)``.
        chat: send chat messages (chat models) or one plain-text prompt (base models).
        primer: plain-text prompts end with it, and it is put back in front of the answer
            before parsing (it starts the expected format); unused for chat prompts.
        stop: stop strings for the judge's answer (none by default: chat models end at EOS).
        max_trajectory_chars: longer trajectories keep their last this many characters.
        examples: worked examples shown first (chat: user / assistant turns; plain text:
            request and answer paragraphs). The defaults are two arithmetic steps scored on
            0..10: replace them (or pass ``()``) for other domains or ranges.

    The rubric (score bands) and the answer format are text in ``system``, so the examples
    repeat only the short case; change the bands together with ``low`` / ``high``.
    """

    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER
    low: int = 0
    high: int = 10
    chat: bool = True
    primer: str = "Explanation:"
    stop: tuple[str, ...] = ()
    max_trajectory_chars: int = 4000
    examples: tuple[JudgeExample, ...] = DEFAULT_EXAMPLES

    def __post_init__(self) -> None:
        examples = tuple(JudgeExample(**e) if isinstance(e, Mapping) else e
                         for e in self.examples)
        if not all(isinstance(e, JudgeExample) for e in examples):
            raise ValueError("examples must be JudgeExample values (or dicts of their fields)")
        object.__setattr__(self, "examples", examples)
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str)
                           else tuple(self.stop))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)):
            raise ValueError(f"low and high must be ints, got {self.low!r}, {self.high!r}")
        if self.low >= self.high:
            raise ValueError(f"the score range needs low < high, got {self.low}..{self.high}")
        if "{trajectory}" not in self.system + self.user:
            raise ValueError("the template must show the state: put {trajectory} in user")
        if self.max_trajectory_chars < 1:
            raise ValueError("max_trajectory_chars must be at least 1")

    @classmethod
    def swe_search(cls, **overrides: Any) -> JudgeTemplate:
        """SWE-Search's shape: an integer reward in −100..100 with banded meanings."""
        return cls(**{"system": SWE_SEARCH_SYSTEM, "user": DEFAULT_USER, "low": -100,
                      "high": 100, "examples": SWE_SEARCH_EXAMPLES, **overrides})

    @classmethod
    def load(cls, path: str | Path) -> JudgeTemplate:
        """A template from a JSON or YAML file holding some of the fields (the rest default)."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        known = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, Mapping) else data
            raise ValueError(f"{path}: a judge template holds the fields {sorted(known)}; "
                             f"unexpected: {extra!r}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def render(self, node: CriticInput, trajectory: str | None = None) -> Prompt:
        """The judge's prompt for ``node`` (``trajectory`` overrides :func:`render_trajectory`)."""
        steps = render_trajectory(node) if trajectory is None else trajectory
        request = self._fill(self.user, str(node.task.problem), steps, node.done)
        system = self._fill(self.system, str(node.task.problem), steps, node.done)
        shots = [(self._fill(self.user, e.problem, e.trajectory, e.finished), e.answer)
                 for e in self.examples]
        if self.chat:
            messages = [{"role": "system", "content": system}] if system else []
            for user, answer in shots:
                messages += [{"role": "user", "content": user},
                             {"role": "assistant", "content": answer}]
            return [*messages, {"role": "user", "content": request}]
        parts = [system] if system else []
        parts += [f"{user}\n\n{answer}" for user, answer in shots]
        return "\n\n".join([*parts, request, *([self.primer] if self.primer else [])])

    def _fill(self, text: str, problem: str, trajectory: str, finished: bool) -> str:
        if len(trajectory) > self.max_trajectory_chars:
            trajectory = "…" + trajectory[-self.max_trajectory_chars:]
        values = {"problem": problem.strip(), "trajectory": trajectory,
                  "finished": "yes" if finished else "no", "low": str(self.low),
                  "high": str(self.high)}
        return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)


def render_trajectory(node: CriticInput) -> str:
    """The steps taken so far, as text: one line per step for step-list states (such as
    :class:`environments.math.stepwise.MathState`); otherwise the environment's prompt text, or
    the conversation after the first user message of a chat prompt (else its last message);
    an agent environment's whole history (``environment.messages``)."""
    steps = getattr(node.state, "steps", None)
    if isinstance(steps, Sequence) and not isinstance(steps, str) and all(
            isinstance(s, str) for s in steps):
        return "\n".join(steps) if steps else "(no steps yet)"
    env = node.environment
    # an agent's whole history, not the window its policy is prompted with
    prompt = env.messages(node.state) if is_interactive(env) else env.prompt(node.state)
    if isinstance(prompt, str):
        return prompt.strip() or "(no steps yet)"
    messages = [m for m in prompt if m.get("role") != "system"]
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    later = messages[first_user + 1:] if first_user is not None else messages
    if later:
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in later)
    return str(messages[-1].get("content", "")) if messages else "(no steps yet)"


# ------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Judgment:
    """One parsed answer of the judge."""

    score: float
    explanation: str | None = None
    feedback: str | None = None


_LABELS = {"explanation": "explanation", "reasoning": "explanation", "analysis": "explanation",
           "feedback": "feedback", "score": "score", "reward": "score", "rating": "score",
           "value": "score", "grade": "score"}
_LABEL_RE = re.compile(
    r"^[ \t>#*_\-`]*(" + "|".join(_LABELS) + r")\b[^:=\n]{0,24}?[ \t*_`]*[:=]+[ \t*_`]*(.*)$",
    re.IGNORECASE | re.MULTILINE)
# ASCII digits only: float() would accept other scripts' digits, which no judge means.
_NUMBER = r"[-+−]?[0-9]+(?:\.[0-9]+)?"
_SCORE_RE = re.compile(  # a number, maybe a fraction, and no arithmetic after it ("14+18=32")
    rf"^[\s*_`\[(\"']*({_NUMBER})(?:\s*(?:/|out\s+of)\s*([0-9]+(?:\.[0-9]+)?))?"
    r"(?![0-9A-Za-z]|\.[0-9]|\s*[-+*×÷=^/][\s(]*[0-9])", re.IGNORECASE)
# "I would give it 8/10" (not "3*8/10": no arithmetic right before the numerator)
_FRACTION_RE = re.compile(
    r"(?<![0-9.*+\-/=^×÷])([0-9]+(?:\.[0-9]+)?)\s*(?:/|out\s+of)\s*([0-9]+)(?![0-9]|\.[0-9])",
    re.IGNORECASE)
_TAG_RE = re.compile(r"<(score|reward|rating)>\s*([^<]{0,40}?)\s*</\1>", re.IGNORECASE)
_MAX_TEXT = 20_000  # longer answers keep their tail (the score comes last)
_MAX_JSON_TRIES = 64


def parse_judgment(text: str, low: float, high: float) -> Judgment | None:
    """Read a judge's answer; None when it has no score in ``[low, high]``. Never raises.

    Accepted: ``Explanation: … / Feedback: … / Score: N`` lines, labels in any case, wrapped in
    markdown (``**Score:** 8``, ``### Score: 8``) or followed by a note (``Score (0-10): 8``),
    synonyms (reasoning / analysis for the explanation, reward / rating / grade / value for the
    score), a JSON object with such keys, ``<score>8</score>``, and an answer that is only a
    number. A score may be a decimal or a fraction, ``8/10`` or ``8 out of 10``: a fraction whose
    denominator is ``high`` means the numerator; any other denominator ``d`` is read as the
    share ``n / d`` of the declared range (``4/5`` on 0..10 is 8). With no label at all, the
    last fraction over ``high`` in the prose counts (``I'd give it 8/10``).

    Several scores: the LAST labelled score decides (a model that revises itself ends with its
    final word; a restated format line such as ``Score: N`` has no number and is skipped). The
    deciding score out of range means None, not a clamped value.
    """
    try:
        return _parse(text, float(low), float(high))
    except (ValueError, TypeError, RecursionError, OverflowError):
        return None


def _parse(text: str, low: float, high: float) -> Judgment | None:
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[-_MAX_TEXT:]
    found = _parse_json(text, low, high)
    if found is not None:
        return found
    sections: dict[str, list[str]] = {}
    score: float | None = None
    scored = False
    matches = list(_LABEL_RE.finditer(text))
    for k, match in enumerate(matches):
        kind = _LABELS[match.group(1).lower()]
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = (match.group(2) + text[match.end():end]).strip()
        if kind == "score":
            value = _score(match.group(2), low, high)
            if value is not _NO_NUMBER:
                score, scored = value, True  # the last numbered score decides
            continue
        sections.setdefault(kind, []).append(_clean(body))
    if not scored:
        for tag in _TAG_RE.finditer(text):
            value = _score(tag.group(2), low, high)
            if value is not _NO_NUMBER:
                score, scored = value, True
    if not scored and not matches:  # a bare number: "8", "**8/10**"
        value = _score(text.strip(), low, high, whole=True)
        if value is not _NO_NUMBER:
            score, scored = value, True
    if not scored:  # prose with a rating over the declared top: "I'd give it 8/10"
        fractions = [m for m in _FRACTION_RE.finditer(text) if float(m.group(2)) == high]
        if fractions:
            score, scored = _score(fractions[-1].group(0), low, high), True
    if score is None:
        return None
    explanation = next((s for s in sections.get("explanation", []) if s), None)
    feedback = next((s for s in sections.get("feedback", []) if s), None)
    return Judgment(score, explanation, feedback)


_NO_NUMBER: Any = object()


def _score(raw: Any, low: float, high: float, whole: bool = False) -> Any:
    """The score in ``raw`` (None if out of range), or ``_NO_NUMBER`` if it holds no number."""
    if isinstance(raw, bool):
        return _NO_NUMBER
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value):
            return None
        return value if low <= value <= high else None
    if not isinstance(raw, str):
        return _NO_NUMBER
    raw = raw.strip()
    match = _SCORE_RE.match(raw)
    if match is None:
        return _NO_NUMBER
    if whole and raw[match.end():].strip(" \t*_`.)]\"'") != "":
        return _NO_NUMBER
    value = float(match.group(1).replace("−", "-"))
    if match.group(2) is not None:
        denominator = float(match.group(2))
        if denominator <= 0 or not 0 <= value <= denominator:
            return None
        if denominator != high:
            value = low + (high - low) * value / denominator
    if not math.isfinite(value):
        return None
    return value if low <= value <= high else None


def _parse_json(text: str, low: float, high: float) -> Judgment | None:
    """The last JSON object in ``text`` that carries a score key."""
    decoder = json.JSONDecoder()
    best: Judgment | None = None
    starts = [m.start() for m in re.finditer(r"\{", text)][:_MAX_JSON_TRIES]
    position = 0
    for start in starts:
        if start < position:  # inside an object already read
            continue
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        position = end
        if not isinstance(obj, dict):
            continue
        keys = {str(k).strip().lower(): v for k, v in obj.items()}
        score_keys = [k for k in keys if _LABELS.get(k) == "score"]
        if not score_keys:
            continue
        value = _score(keys[score_keys[0]], low, high)
        if value is _NO_NUMBER or value is None:
            best = None  # the last scored object decides, as with labels
            continue
        explanation = next((str(keys[k]).strip() for k in keys
                            if _LABELS.get(k) == "explanation" and str(keys[k]).strip()), None)
        feedback = next((str(keys[k]).strip() for k in keys
                         if _LABELS.get(k) == "feedback" and str(keys[k]).strip()), None)
        best = Judgment(value, explanation, feedback)
    return best


def _clean(body: str) -> str:
    """A section's text without markdown emphasis and surrounding quotes, on one line."""
    body = re.sub(r"[*_`]{2,}", "", body)
    return " ".join(body.split()).strip(" \"'*_`")


# ------------------------------------------------------------------ the critic


class JudgeCritic:
    """Values from an LLM judge (see the module docstring).

    Args:
        policy: the judge model (any :class:`~mcts_agent.llm.base.Policy`; a chat model for the
            default chat template, else set ``template.chat=False``).
        template: the prompt and score range; default :class:`JudgeTemplate` (0..10).
        samples: answers per state (self-consistency); the value is the mean of the parsed
            scores. ``samples > 1`` needs ``temperature > 0``.
        retries: rounds of re-asking for the answers that did not parse, each with new seeds;
            a greedy judge (``temperature=0``) retries at temperature 0.7. An empty answer
            because the prompt fills the model's context is not retried
            (``details["context_full"]``).
        temperature, max_tokens: sampling settings of the judge's answers.
        neutral: the value of a state whose answers never parsed (``details["unknown"]``).
        seed: seeds every request together with the task id and the state.
        max_cache: most states remembered.
        trajectory: renders a node's steps for ``{trajectory}``; default
            :func:`render_trajectory`.

    Counters: ``judged`` (states the model rated), ``unknown`` (of those, the ones with no
    parsable answer), ``answers`` and ``unparsed`` (answers generated / not parsed), ``calls``
    (``propose`` calls).
    """

    name = "judge"

    def __init__(
        self,
        policy: Policy,
        template: JudgeTemplate | None = None,
        samples: int = 1,
        retries: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 160,
        neutral: float = 0.5,
        seed: int = 0,
        max_cache: int = 100_000,
        trajectory: Callable[[CriticInput], str] | None = None,
    ) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an int >= 1, got {samples!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if samples > 1 and temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0: greedy answers are all equal")
        if not 0.0 <= neutral <= 1.0:
            raise ValueError(f"neutral must lie in [0, 1], got {neutral!r}")
        self.policy = policy
        self.template = template or JudgeTemplate()
        self.samples, self.retries = samples, retries
        self.temperature, self.max_tokens = temperature, max_tokens
        self.neutral, self.seed = neutral, seed
        self.trajectory = trajectory
        self.cache = StateCache(max_cache)
        self.judged = self.unknown = self.answers = self.unparsed = self.calls = 0
        self._warned = False

    @classmethod
    def from_spec(cls, arg: str | None, context: CriticContext) -> JudgeCritic:
        """``judge[=MODEL]``: the search policy judges, or a model folder, or ``smollm2``."""
        from mcts_agent.search.critic_specs import judge_policy

        if arg is None and context.policy is None:
            raise ConfigError("judge needs a model: the search policy, judge=MODEL (a folder) "
                              "or judge=smollm2")
        return cls(judge_policy(arg, context.policy), seed=context.seed)

    def describe(self) -> dict[str, Any]:
        return {"policy": getattr(self.policy, "name", type(self.policy).__name__),
                "samples": self.samples, "retries": self.retries,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "neutral": self.neutral, "seed": self.seed,
                "template": {"low": self.template.low, "high": self.template.high,
                             "chat": self.template.chat,
                             "hash": content_hash(asdict(self.template))}}

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        return self.cache.evaluate(nodes, self._judge)

    def _judge(self, nodes: list[CriticInput]) -> list[Assessment]:
        prompts = [self.template.render(n, None if self.trajectory is None
                                        else self.trajectory(n)) for n in nodes]
        raw: list[list[str]] = [[] for _ in nodes]
        parsed: list[list[Judgment]] = [[] for _ in nodes]
        tokens = [0] * len(nodes)
        missing = [self.samples] * len(nodes)  # answers still to get, per node
        full = [False] * len(nodes)  # the prompt fills the model's context: retrying is futile
        for attempt in range(self.retries + 1):
            todo = [i for i, m in enumerate(missing) if m and not full[i]]
            if not todo:
                break
            temperature = self.temperature if attempt == 0 or self.temperature else 0.7
            requests = [GenerationRequest(
                prompts[i], n=missing[i], max_tokens=self.max_tokens, temperature=temperature,
                stop=self.template.stop, seed=self._seed(nodes[i], attempt)) for i in todo]
            self.calls += 1
            answers = self.policy.propose(requests)
            for i, candidates in zip(todo, answers, strict=True):
                for candidate in candidates:
                    text = self._answer_text(candidate)
                    raw[i].append(text)
                    tokens[i] += candidate.num_tokens
                    judgment = parse_judgment(text, self.template.low, self.template.high)
                    if judgment is not None:
                        parsed[i].append(judgment)
                        missing[i] -= 1
                    elif candidate.finish_reason == "prompt_too_long":
                        full[i] = True
                self.answers += len(candidates)
        if any(full) and not self._warned:
            self._warned = True
            log.warning("judge prompts fill the context of %s: those states get the neutral "
                        "value; use a shorter template or a model with a longer context",
                        getattr(self.policy, "name", "the judge model"))
        out = []
        for i in range(len(nodes)):
            assessment = self._assessment(parsed[i], raw[i], tokens[i])
            if full[i]:
                assessment = replace(assessment, details={**assessment.details,
                                                          "context_full": True})
            self.judged += 1
            self.unknown += bool(assessment.details["unknown"])
            self.unparsed += assessment.details["unparsed"]
            out.append(assessment)
        return out

    def _answer_text(self, candidate: Candidate) -> str:
        if self.template.chat or not self.template.primer:
            return candidate.text
        return f"{self.template.primer}{candidate.text}"

    def _assessment(self, parsed: list[Judgment], raw: list[str], tokens: int) -> Assessment:
        low, high = self.template.low, self.template.high
        scores = [j.score for j in parsed]
        details: dict[str, Any] = {
            "scores": scores, "raw": raw,
            "unparsed": len(raw) - len(parsed), "retries": len(raw) - self.samples,
            "unknown": not parsed}
        if not parsed:
            return Assessment(self.neutral, tokens=tokens,
                              details={**details, "score": None, "explanation": None})
        mean = sum(scores) / len(scores)
        # The explanation and feedback of the answer closest to the mean score speak for it.
        speaker = min(parsed, key=lambda j: abs(j.score - mean))
        value = min(max((mean - low) / (high - low), 0.0), 1.0)
        details.update(score=mean, spread=max(scores) - min(scores),
                       explanation=speaker.explanation, feedback=speaker.feedback)
        return Assessment(value, feedback=speaker.feedback or speaker.explanation,
                          tokens=tokens, details=details, explanation=speaker.explanation)

    def _seed(self, node: CriticInput, attempt: int) -> int:
        key = f"{self.seed}/{node.task.id}/{node.state!r}/{node.done}/{attempt}"
        return zlib.crc32(key.encode())


