"""The user's own math problems (GSM8K / MATH style), answers checked with `math-verify`.

Sources, all local (nothing is fetched from the hub):

* ``.jsonl`` / ``.ndjson``: one JSON object per line; ``.json``: a list of objects (or an object
  holding one such list, e.g. ``{"data": [...]}``), else read as JSON lines; ``.csv`` with a
  header row. These are parsed with the standard library, so a malformed line (not JSON, not
  UTF-8) is skipped, with a warning naming ``file:line``, instead of failing the whole file as
  ``datasets``' JSON loader does. A ``.json`` or ``.csv`` file is decoded whole: one that is not
  UTF-8 is refused with the byte where decoding failed. A UTF-8 byte-order mark is ignored.
* ``.parquet`` and folders written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``:
  read with Hugging Face ``datasets`` (imported only then).

math-verify and threads: it bounds parsing and comparison with ``signal.alarm``, which works only
in the main thread (elsewhere it raises ``ValueError``) and replaces the process's ``SIGALRM``
handler while it runs, cancelling any alarm the caller had set. Its ``TimeoutException`` derives
from ``BaseException``, so ``except Exception`` does not catch it. Without the alarm a short
adversarial answer such as ``9**9**9**9`` hangs it, so off the main thread :func:`math_equal`
does not call math-verify at all and compares plain numbers and text instead.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

from environments.math.stepwise import MathState, StepwiseMath
from mcts_agent.contracts import Task, content_hash
from mcts_agent.errors import ConfigError

log = logging.getLogger(__name__)

WARN_LINES = 10  # malformed lines warned about one by one; the rest are summed up
_GSM8K_FINAL = re.compile(r"####\s*(.*?)\s*$", re.S)
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DELIMITED = ("$", "\\boxed", "\\[", "\\(")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8 (surrogateescape)
_warned_thread = False

Record = tuple[str, Any]
"""Where a row came from (``file:line`` / ``file:record N`` / ``folder[split]:row N``) and the
row itself."""


# ----------------------------------------------------------------------------- answers


def final_answer(text: Any) -> str:
    """The final answer of a reference: the text after GSM8K's ``####`` (a full solution may
    precede it), thousands separators dropped (``1,008`` → ``1008``; ``1, 2`` is kept)."""
    answer = str(text).strip()
    match = _GSM8K_FINAL.search(answer)
    if match:
        answer = match.group(1)
    answer = answer.replace("\u2212", "-").strip()  # a Unicode minus sign
    return answer.replace(",", "") if _THOUSANDS.match(answer) else answer


def math_equal(pred: str, gold: Any, timeout_s: int = 2) -> bool:
    """Whether answer ``pred`` equals reference ``gold`` (``\\frac{1}{2}`` ≡ ``0.5``, ``$3$`` ≡
    ``3``, ``\\boxed{7}`` ≡ ``7``); never raises, anything that fails counts as not equal.

    In the main thread math-verify decides, each parse and comparison bounded by ``timeout_s``
    whole seconds. In other threads its timers cannot run (see the module docstring), so the
    signal-free :func:`plain_equal` decides, and a warning says so once.
    """
    gold_text, pred_text = final_answer(gold), final_answer(pred)
    if not gold_text or not pred_text:
        return False
    if threading.current_thread() is not threading.main_thread():
        _warn_off_main_thread()
        return plain_equal(pred_text, gold_text)
    try:
        return _verify(pred_text, gold_text, timeout_s)
    except BaseException as err:  # math-verify's TimeoutException is a BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def _verify(pred: str, gold: str, timeout_s: int) -> bool:
    """math-verify on the gold's parse and on both readings of the prediction."""
    from math_verify import parse, verify

    parsed_gold = _parse(gold, timeout_s)
    if not parsed_gold:  # math-verify cannot read the reference: compare as text
        return plain_equal(pred, gold)
    # "$42 dollars$" parses as a product, "\frac12" only inside $…$: try both readings
    return any(verify(parsed_gold, candidate, timeout_seconds=timeout_s)
               for candidate in (_parse(pred, timeout_s), parse(pred, parsing_timeout=timeout_s))
               if candidate)


def _parse(text: str, timeout_s: int) -> list[Any]:
    """math-verify's parse of ``text`` as LaTeX math (wrapped in ``$…$`` unless delimited)."""
    from math_verify import parse

    if any(mark in text for mark in _DELIMITED):
        return parse(text, parsing_timeout=timeout_s)
    return parse(f"${text}$", parsing_timeout=timeout_s) or parse(text, parsing_timeout=timeout_s)


def plain_equal(pred: str, gold: str) -> bool:
    """Equal as exact numbers (``0.5`` ≡ ``1/2`` ≡ ``\\frac{1}{2}``, ``1,008`` ≡ ``1008``) or
    as text without spaces, ``$`` and ``\\boxed{}``: a signal-free check that cannot hang."""
    a, b = _plain(pred), _plain(gold)
    if not a or not b:
        return False
    x, y = _number(a), _number(b)
    return x == y if x is not None and y is not None else a == b


def _plain(text: str) -> str:
    text = final_answer(text).replace("$", "").replace(" ", "")
    boxed = re.fullmatch(r"\\boxed\{(.*)\}", text)
    return (boxed.group(1) if boxed else text).rstrip(".")


def _number(text: str) -> Fraction | None:
    frac = re.fullmatch(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", text)
    if frac:
        text = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    try:
        return Fraction(text.replace(",", "")) if len(text) < 64 else None
    except (ValueError, ZeroDivisionError):
        return None


def _warn_off_main_thread() -> None:
    global _warned_thread
    if not _warned_thread:
        _warned_thread = True
        log.warning("math-verify needs the main thread for its timeouts; answers checked in "
                    "other threads are compared as plain numbers and text")


# ----------------------------------------------------------------------------- reading rows


def read_records(path: Path) -> dict[str | None, list[Record]]:
    """The rows of a local dataset, by split (``None`` for a single file without splits)."""
    if path.is_dir():
        return _saved_dataset(path)
    readers = {".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _json, ".csv": _csv,
               ".parquet": _parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unknown format {path.suffix!r}; use .jsonl, .json, .csv, "
                          ".parquet or a folder saved with datasets' save_to_disk")
    return {None: list(reader(path))}


def _jsonl(path: Path) -> Iterator[Record]:
    # surrogateescape: a line that is not UTF-8 is one malformed row, not a failed file
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield f"{path}:{number}", _loads(line)


def _loads(text: str) -> Any:
    """A JSON value, or why not as a :class:`ValueError` to report for that row."""
    bad = _UNDECODABLE.search(text)
    if bad:
        byte = ord(bad.group()) - 0xDC00
        return ValueError(f"not UTF-8 (byte 0x{byte:02x} at column {bad.start() + 1}); "
                          "re-encode the file as UTF-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return ValueError(f"not JSON ({err.msg} at column {err.colno})")


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a byte-order mark dropped), or a one-line
    :class:`ConfigError` naming the first byte that is not UTF-8."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = skip + err.start
        line = data.count(b"\n", 0, at) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[at]:02x} at byte offset {at}, line {line}); "
            f"re-encode it as UTF-8, e.g. iconv -f cp1252 -t utf-8 {path.name} > "
            f"{path.stem}-utf8{path.suffix}") from None


def _json(path: Path) -> Iterator[Record]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON lines under a .json name
        yield from _jsonl(path)
        return
    if isinstance(data, Mapping):  # {"data": [...]}: the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        data = [data]
    for number, row in enumerate(data, 1):
        yield f"{path}:record {number}", row


def _csv(path: Path) -> Iterator[Record]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    for row in reader:
        yield f"{path}:{reader.line_num}", row


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError("reading .parquet files and saved Hugging Face datasets needs the "
                          "`datasets` package: pip install 'datasets>=3'") from err
    return datasets


def _parquet(path: Path) -> Iterator[Record]:
    rows = _datasets().load_dataset("parquet", data_files=str(path), split="train")
    for number, row in enumerate(rows, 1):
        yield f"{path}:row {number}", row


def _saved_dataset(path: Path) -> dict[str | None, list[Record]]:
    try:
        loaded = _datasets().load_from_disk(str(path))
    except FileNotFoundError as err:
        raise ConfigError(f"{path} is a folder but not one written by datasets' save_to_disk; "
                          "give a .jsonl, .json, .csv or .parquet file or such a folder") from err
    splits = loaded if hasattr(loaded, "keys") else {None: loaded}
    return {name: [(f"{path}[{name}]:row {i}" if name else f"{path}:row {i}", row)
                   for i, row in enumerate(rows, 1)]
            for name, rows in splits.items()}


# ----------------------------------------------------------------------------- environment


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


class RowSource:
    """Tasks from a local file, for environments over a user's file: one task per row through
    ``_task(location, row)`` (a :class:`Task`, or why the row is skipped). Malformed rows and
    repeated ids are skipped, counted in ``skipped`` (``skipped_rows`` says where and why) and
    logged by ``file:line``; a file without one usable row raises a
    :class:`~mcts_agent.errors.ConfigError` saying what a row needs (``row_needs``)."""

    path: Path
    row_needs: str

    def _load_rows(self) -> None:
        self.skipped_rows: list[str] = []
        self._splits = {split: self._tasks(rows) for split, rows in
                        read_records(self.path).items()}
        for message in self.skipped_rows[:WARN_LINES]:
            log.warning("skipped %s", message)
        if self.skipped > WARN_LINES:
            log.warning("… and %d more malformed rows in %s", self.skipped - WARN_LINES,
                        self.path)
        if not any(self._splits.values()):
            raise ConfigError(f"{self.path}: no usable row ({self.skipped} skipped); each needs "
                              f"{self.row_needs}")

    @property
    def skipped(self) -> int:
        """How many rows were skipped as malformed."""
        return len(self.skipped_rows)

    @property
    def splits(self) -> list[str | None]:
        """The source's splits (``[None]`` for a single file, which has none and takes any
        split name)."""
        return list(self._splits)

    def tasks(self, n: int | None = None, split: str | None = None,
              seed: int | None = None) -> list[Task]:
        """The first ``n`` usable problems in file order (all with ``n=None``).

        ``split`` picks a split of a saved ``DatasetDict`` and is ignored for single files (so
        the CLI's default ``--split test`` works on them); ``seed`` is unused: the order is
        the file's.
        """
        tasks = self._splits[None] if None in self._splits else self._named_split(split)
        return tasks if n is None else tasks[:n]

    def _named_split(self, split: str | None) -> list[Task]:
        if split in self._splits:
            return self._splits[split]
        if split is None and len(self._splits) == 1:
            return next(iter(self._splits.values()))
        raise ConfigError(f"{self.path} has splits {sorted(map(str, self._splits))}, not "
                          f"{split!r}; pass one of them as split (--split on the command line)")

    def _tasks(self, rows: list[Record]) -> list[Task]:
        tasks: list[Task] = []
        first_seen: dict[str, str] = {}  # task id -> where it first appeared
        for location, row in rows:
            task = self._task(location, row)
            if isinstance(task, str):
                self.skipped_rows.append(f"{location}: {task}")
            elif task.id in first_seen:
                self.skipped_rows.append(
                    f"{location}: repeats id {task.id!r} of {first_seen[task.id]}")
            else:
                first_seen[task.id] = location
                tasks.append(task)
        return tasks

    def _task(self, location: str, row: Any) -> Task | str:
        raise NotImplementedError


class JsonlMathEnvironment(StepwiseMath, RowSource):
    """Math problems from the user's own file, reasoned line by line and ended by ``Answer:``.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file, or a folder saved with
            ``datasets``' ``save_to_disk`` (see the module docstring).
        question_field / answer_field: the columns of the problem and its reference; the
            reference may be a full solution ending in GSM8K's ``#### 42``.
        id_field: a column of unique task ids, required in every row. Default: the row's own
            ``id`` when it has one, else a hash of its question and answer, so ids follow the
            content: inserting or deleting a row leaves every other task's id (and saved
            tree) unchanged.
        prompt_template: renders ``{problem}`` (literal braces are written ``{{ }}``).
        few_shot: worked examples in the same line-per-step format, put before every problem.
        system_prompt: instructions put first.
        timeout_s: math-verify's bound per parse and per comparison, in whole seconds.

    The prompt is ``system_prompt + few_shot + prompt_template`` (a newline is added after
    either prefix that lacks one). Rows without a non-empty string question or a non-empty
    answer, rows that are not objects, and repeated ids are skipped and counted in ``skipped``
    (``skipped_rows`` says where and why), each with a warning naming the ``file:line``; a
    source without one usable row raises :class:`~mcts_agent.errors.ConfigError`.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | Path,
        question_field: str = "question",
        answer_field: str = "answer",
        id_field: str | None = None,
        prompt_template: str = "Q: {problem}\n",
        few_shot: str = "",
        system_prompt: str = "",
        timeout_s: int = 2,
    ) -> None:
        super().__init__(prompt_template, checker=partial(math_equal, timeout_s=timeout_s))
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"no dataset at {self.path}; give a .jsonl, .json, .csv or "
                              ".parquet file or a folder saved with save_to_disk (path=)")
        _check_template(prompt_template)
        self.name = f"jsonl:{self.path.name}"
        self.fields = question_field, answer_field, id_field
        self.preamble = _with_newline(system_prompt) + _with_newline(few_shot)
        self._load_rows()

    @property
    def row_needs(self) -> str:
        question, answer, _ = self.fields
        return (f"a non-empty string {question!r} and a non-empty {answer!r} (set "
                "question_field= / answer_field= if your columns are named otherwise)")

    def reset(self, task: Task) -> MathState:
        return MathState(self.preamble + self.prompt_template.format(problem=task.problem))

    def _task(self, location: str, row: Any) -> Task | str:
        """The task of one row, or why the row is skipped."""
        question_field, answer_field, id_field = self.fields
        if isinstance(row, ValueError):
            return str(row)
        if not isinstance(row, Mapping):
            return f"not an object but {type(row).__name__}"
        question, raw_answer = row.get(question_field), row.get(answer_field)
        if not isinstance(question, str) or not question.strip():
            return f"needs a non-empty string {question_field!r}"
        answer = final_answer(raw_answer) if raw_answer is not None else ""
        if not answer:
            return f"needs a non-empty {answer_field!r}"
        if id_field and row.get(id_field) in (None, ""):
            return f"needs an id in {id_field!r}"
        question = question.strip()
        # ids follow the content, never the row's position (see id_field)
        task_id = str(row[id_field]) if id_field else _own_id(row)
        task_id = task_id or content_hash(question, answer)
        details = {"source": location}
        if str(raw_answer).strip() != answer:
            details["solution"] = str(raw_answer)
        return Task(task_id, question, answer, details)


def _own_id(row: Mapping[str, Any]) -> str | None:
    """The row's ``id`` when it is a non-empty string or an integer."""
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


def _check_template(template: str) -> None:
    try:
        template.format(problem="")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"prompt_template {template!r} may only use {{problem}}; write literal "
                         f"braces as {{{{ }}}} ({err!r})") from err
