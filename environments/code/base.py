"""Line-per-step program writing: the shared base of the code environments.

The state is an immutable value: the task's prompt (the start of the program, e.g. a signature
and docstring) plus the code lines written so far. **A step is one line of code** appended to
the program (``step_delimiter = "\\n"``). The episode ends when

* the model writes the end marker line ``# end`` (not part of the program), or a ``return`` at
  the function body's own level (the function is complete; what a small model learns easily);
* the lines so far are a syntax error that no further line can fix (``codeop`` tells "broken"
  from "incomplete", so an open bracket or a fresh ``if x:`` block goes on): a failed branch;
* ``max_lines`` lines were written (cut: no answer).

Indentation: the environment declares ``keep_indent``, so the driver hands each line over with
its leading spaces and the model's own indentation is kept (free-form code dedents where it
must). A line that arrives flush left (a model or caller that drops indentation) is indented
like an editor would: one level deeper after a line ending in ``:``, one level shallower after
``return``, ``raise``, ``pass``, ``break`` or ``continue`` inside a block, else at the previous
line's level.

Grading runs the program with tests in the sandbox (:mod:`mcts_agent.sandbox`), never in this
process. ``task.reference`` holds the hidden tests ``{"setup": str, "tests": [str, ...]}``;
``task.metadata["visible_tests"]`` the examples shown in the prompt. :meth:`score` (data mode,
and grading after an inference search) runs the hidden tests, partial credit = share passed;
:meth:`visible_score` runs only the visible ones and needs no reference, which is how the
verifier judges finished programs in inference mode. :meth:`feedback` is the first failing
test with its error (or the syntax error), which the verifier passes on as the critic's feedback
for ``sibling_feedback``. :meth:`prefetch` grades a wave's finished programs in one batched
sandbox call; reports are cached by (program, tests).
"""

from __future__ import annotations

import codeop
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mcts_agent.contracts import Step, Task
from mcts_agent.errors import ConfigError

END_MARKER = "# end"
STEP_KINDS = ("line", "program")
_DEDENT_AFTER = re.compile(r"(return|raise|pass|break|continue)\b")
_INDENT = "    "
Runner = Callable[[Sequence[Any]], list[Any]]


@dataclass(frozen=True)
class CodeState:
    """The program so far: ``prompt`` (ends in a newline) and the ``lines`` written after it.

    ``status`` is ``"open"``, ``"done"`` (finished cleanly: it has an answer), ``"syntax"``
    (a syntax error ended it; ``error`` says which) or ``"cut"`` (``max_lines`` reached)."""

    prompt: str
    lines: tuple[str, ...] = ()
    status: str = "open"
    error: str | None = None

    @property
    def text(self) -> str:
        """The program as the policy sees it, one line per step."""
        return self.prompt + "".join(line + "\n" for line in self.lines)


def syntax_error(source: str) -> str | None:
    """Why ``source`` can never compile, whatever lines follow (None: it compiles or is merely
    incomplete: an open block or bracket)."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences etc. are not errors
            warnings.simplefilter("ignore")
            codeop.compile_command(source, "<program>", "exec")
    except (SyntaxError, ValueError, OverflowError) as err:
        line = getattr(err, "lineno", None)
        return f"SyntaxError: {getattr(err, 'msg', err)}" + (f" (line {line})" if line else "")
    return None


def body_indent(prompt: str) -> str:
    """The indentation of the body the model writes: one level inside the prompt's last
    ``def`` (the entry point), or none when the prompt has no function."""
    defs = [line for line in prompt.splitlines() if line.lstrip().startswith("def ")]
    if not defs:
        return ""
    return defs[-1][: len(defs[-1]) - len(defs[-1].lstrip())] + _INDENT


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def auto_indent(previous: str | None, base: str, line: str) -> str:
    """``line`` (stripped) indented as an editor would after ``previous`` (see the module
    docstring); a line that kept its leading whitespace is left as it is."""
    if line[:1].isspace() or previous is None:
        return line if line[:1].isspace() else base + line
    level = _indent_of(previous)
    code = previous.strip()
    if code.endswith(":") and not code.startswith("#"):
        level += _INDENT
    elif _DEDENT_AFTER.match(code) and len(level) > len(base):
        level = level[: len(level) - len(_INDENT)]
    return level + line


def normalise(program: str) -> str:
    """The program without trailing spaces and blank lines: what inference mode votes on."""
    lines = [line.rstrip() for line in program.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


class CodeEnvironment:
    """Programs written line by line and graded by unit tests in the sandbox (see the module
    docstring). Subclasses provide tasks whose ``problem`` is the program's start.

    Args:
        max_lines: lines the model may write before the episode is cut.
        steps: ``"line"`` (a step is one line of code) or ``"program"`` (a step is a whole
            program: the tree's children are alternative programs, and with
            ``sibling_feedback`` every new one is written after reading how the earlier ones
            failed, Reflexion / LATS style; give the search ``max_step_tokens`` for a program).
        runner: ``run_tests`` stand-in (tests, a remote pool); default the sandbox's.
        sandbox: passed to ``run_tests`` (None: the sandbox's default).
        cache_size: test reports kept, keyed by (program, tests).
    """

    name = "code"
    step_delimiter = "\n"
    keep_indent = True  # a line's leading spaces are part of the program

    def __init__(self, max_lines: int = 30, runner: Runner | None = None, sandbox: Any = None,
                 cache_size: int = 20_000, steps: str = "line") -> None:
        if max_lines < 1:
            raise ConfigError("max_lines must be at least 1")
        if steps not in STEP_KINDS:
            raise ConfigError(f"steps={steps!r}: a code step is a 'line' or a whole 'program'")
        self.max_lines = max_lines
        self.steps = steps
        if steps == "program":  # the model writes until its end of text (or the end marker)
            self.step_delimiter = END_MARKER
        self.runner = runner
        self.sandbox = sandbox
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, tuple[str, ...]], Any] = OrderedDict()
        self._lock = threading.Lock()  # cohorts step and grade from several threads

    # ------------------------------------------------------------------ the contract

    def reset(self, task: Task) -> CodeState:
        prompt = task.problem if task.problem.endswith("\n") else task.problem + "\n"
        return CodeState(prompt)

    def step(self, state: CodeState, action: str) -> Step:
        if state.status != "open":
            raise ValueError(f"the episode has ended ({state.status})")
        if self.steps == "program":
            return self._write_program(state, action)
        if "\n" in action.strip("\n"):
            raise ValueError("one step is one line of code; got several")
        return self._write_line(state, action)

    def _write_program(self, state: CodeState, text: str) -> Step:
        """A whole program as one step: its lines as line steps would write them; a text that
        ends with the function still open is the complete program (or a syntax error)."""
        step = Step(state)
        for line in text.split("\n"):
            if line.strip():
                step = self._write_line(step.state, line)
                if step.done:
                    return step
        return self._finish(state, step.state.lines)

    def _write_line(self, state: CodeState, action: str) -> Step:
        code = action.rstrip()
        if code.strip() == END_MARKER:
            return self._finish(state, state.lines)
        base = body_indent(state.prompt)
        line = auto_indent(state.lines[-1] if state.lines else None, base, code)
        lines = (*state.lines, line)
        error = syntax_error(state.prompt + "".join(ln + "\n" for ln in lines))
        if error is not None:
            return Step(CodeState(state.prompt, lines, "syntax", error), done=True,
                        info={"invalid_step": True, "feedback": error})
        if base and _indent_of(line) == base and re.match(r"return\b", line.strip()):
            return self._finish(state, lines)
        if len(lines) >= self.max_lines:
            return Step(CodeState(state.prompt, lines, "cut"), done=True, info={"cut": True})
        return Step(CodeState(state.prompt, lines))

    def _finish(self, state: CodeState, lines: tuple[str, ...]) -> Step:
        program = state.prompt + "".join(ln + "\n" for ln in lines)
        try:  # complete now: an open block or bracket at the end is an error after all
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(program, "<program>", "exec")
        except (SyntaxError, ValueError, OverflowError) as err:
            error = f"SyntaxError: {getattr(err, 'msg', err)}"
            return Step(CodeState(state.prompt, lines, "syntax", error), done=True,
                        info={"invalid_step": True, "feedback": error})
        return Step(CodeState(state.prompt, lines, "done"), done=True)

    def prompt(self, state: CodeState) -> str:
        return state.text

    def prompt_with_feedback(self, state: CodeState, feedback: str) -> str:
        """The program so far under the feedback on earlier attempts, written as comments (a
        code model reads them as part of the file)."""
        notes = "".join(f"# {line}".rstrip() + "\n" for line in feedback.splitlines())
        return notes + self.prompt(state)

    def answer(self, state: CodeState) -> str | None:
        """The finished program (prompt + lines, normalised), None unless it ended cleanly."""
        return normalise(state.text) if state.status == "done" else None

    def score(self, state: CodeState, task: Task) -> float | None:
        """Share of the hidden tests (``task.reference``) the finished program passes."""
        if task.reference is None:
            return None
        report = self._graded(state, task, visible=False)
        return 0.0 if report is None else float(report.score)

    def visible_score(self, state: CodeState, task: Task) -> float | None:
        """Share of the visible examples (``task.metadata["visible_tests"]``) passed: the
        verdict inference mode may use (no reference). None when the task shows none."""
        if not task.metadata.get("visible_tests"):
            return None
        report = self._graded(state, task, visible=True)
        return 0.0 if report is None else float(report.score)

    def feedback(self, state: CodeState, task: Task, visible: bool = False) -> str | None:
        """The syntax error, or the first failing test and its error (None: nothing failed)."""
        if state.status == "syntax":
            return state.error
        if state.status == "cut":
            return f"the program was cut after {len(state.lines)} lines without an end"
        if visible and not task.metadata.get("visible_tests"):
            return None
        if not visible and task.reference is None:
            return None
        report = self._graded(state, task, visible)
        return None if report is None or report.solved else report.feedback or None

    def prefetch(self, pairs: Sequence[tuple[CodeState, Task]], visible: bool = False) -> None:
        """Grade many finished programs in ONE batched sandbox call (one wave's), so that the
        per-node ``score`` / ``visible_score`` calls that follow hit the cache."""
        wanted = [(p, t) for p, t in ((self.answer(s), t) for s, t in pairs) if p is not None]
        jobs = {}
        for program, task in wanted:
            tests = self._tests(task, visible)
            if tests is not None and self._cached(program, tests) is None:
                jobs[(program, *tests)] = (program, tests)  # one run per distinct program
        if jobs:
            self._run(list(jobs.values()))

    # ------------------------------------------------------------------ grading

    @staticmethod
    def _tests(task: Task, visible: bool) -> tuple[str, tuple[str, ...]] | None:
        """(setup, tests) to grade ``task`` with, None when it has none of that kind."""
        if visible:
            tests = tuple(task.metadata.get("visible_tests") or ())
            return (str(task.metadata.get("visible_setup", "")), tests) if tests else None
        ref = task.reference
        if not isinstance(ref, dict) or not ref.get("tests"):
            return None
        return str(ref.get("setup", "")), tuple(ref["tests"])

    def _graded(self, state: CodeState, task: Task, visible: bool) -> Any:
        program = self.answer(state)
        tests = self._tests(task, visible)
        if program is None or tests is None:
            return None
        report = self._cached(program, tests)
        return report if report is not None else self._run([(program, tests)])[0]

    def _cached(self, program: str, tests: tuple[str, tuple[str, ...]]) -> Any:
        with self._lock:
            return self._cache.get((program, tests[0], tests[1]))

    def _run(self, jobs: list[tuple[str, tuple[str, tuple[str, ...]]]]) -> list[Any]:
        """Run ``(program, (setup, tests))`` jobs in one sandbox call; cache the reports."""
        from mcts_agent.sandbox import TestJob, run_tests

        distinct = list(dict.fromkeys((program, *tests) for program, tests in jobs))
        runner = self.runner or (lambda batch: run_tests(batch, sandbox=self.sandbox))
        reports = runner([TestJob(program, tests, setup) for program, setup, tests in distinct])
        found = dict(zip(distinct, reports, strict=True))
        with self._lock:
            self._cache.update(found)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [found[(program, *tests)] for program, tests in jobs]

    def grade(self, programs: Sequence[tuple[str, Task]], visible: bool = False) -> list[Any]:
        """Test reports of whole programs (e.g. greedy completions) in one batched call; a
        task without tests of that kind gets None."""
        jobs = [(normalise(p), self._tests(t, visible)) for p, t in programs]
        runnable = [(p, tests) for p, tests in jobs if tests is not None]
        reports = iter(self._run(runnable) if runnable else [])
        return [next(reports) if tests is not None else None for _, tests in jobs]


def example_asserts(prompt: str, entry_point: str | None = None) -> list[str]:
    """The examples of the prompt's docstring as asserts: its ``>>>`` examples, else lines
    such as ``f(3) ==> 9`` / ``f(3) -> 9`` / ``f(3) returns 9`` naming ``entry_point``."""
    found = doctest_asserts(prompt)
    if found or not entry_point:
        return found
    arrow = re.compile(rf"^\s*(?:\*\s*|for\s+)?({re.escape(entry_point)}\(.*?\))\s*#?\s*"
                       r"(?:==>|==|➞|=>|->|should return|returns?|=)\s*(.+?)\.?\s*$")
    for match in filter(None, map(arrow.match, prompt.splitlines())):
        test = f"assert ({match.group(1)}) == ({match.group(2)})"
        if _compiles(test):
            found.append(test)
    return found


def doctest_asserts(prompt: str) -> list[str]:
    """The ``>>>`` examples of the prompt's last function docstring as asserts
    (``assert (add(1, 2)) == (3)``); examples that are not expressions are left out."""
    import ast
    import doctest

    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    doc = ast.get_docstring(functions[-1]) if functions else None
    if not doc:
        return []
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # inconsistent indentation in the docstring
        return []
    asserts = []
    for example in examples:
        source, want = example.source.strip(), example.want.strip()
        if not want or "\n" in source or want.startswith("Traceback"):
            continue
        test = f"assert ({source}) == ({want})"
        if syntax_error(test) is None and _compiles(test):
            asserts.append(test)
    return asserts


def _compiles(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<test>", "exec")
    except (SyntaxError, ValueError, OverflowError):
        return False
    return True
