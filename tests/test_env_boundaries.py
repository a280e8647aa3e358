"""Where the built-in environments meet their users and the core: splits that are refused
instead of hanging, content-derived task ids, undecodable files, the declared contracts, and
the layering of the core (``mcts_agent`` never imports ``environments`` or ``critics``)."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from environments.math.arith import ArithConfig, generate, iter_problems
from environments.math.arith_env import ArithEnvironment
from environments.math.dataset import JsonlMathEnvironment
from mcts_agent.contracts import Task, check_environment, checked_score, load_tasks
from mcts_agent.errors import ConfigError, UserError
from mcts_agent.registry import environments

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- R5: splits


@pytest.mark.parametrize("split", ["Test", "dev", "validation", ""])
def test_arith_refuses_an_unknown_split_instead_of_hanging(split):
    env = ArithEnvironment()
    assert tuple(env.splits) == ("train", "test")
    with deadline(10), pytest.raises(ConfigError) as err:
        env.tasks(3, split=split)
    assert repr(split) in one_line(err) and "train, test" in str(err.value)
    with deadline(10), pytest.raises(ConfigError):
        generate(ArithConfig(), 3, split=split)  # direct Python callers too
    with deadline(10), pytest.raises(ConfigError):
        iter_problems(ArithConfig(), split=split)  # at the call, not at the first draw
    with deadline(10), pytest.raises(UserError, match="no split"):
        load_tasks(env, 3, split=split)


def test_arith_refuses_an_empty_split_instead_of_hanging():
    with deadline(10), pytest.raises(ConfigError, match="held_out_fraction") as err:
        ArithEnvironment(held_out_fraction=0.0).tasks(2, split="test")
    one_line(err)
    # a problem space whose few questions all hash to train: found out after bounded draws
    tiny = ArithConfig(num_operands=(2, 2), max_operand=1, operators="+")
    split = "test" if not any(p.split == "test" for p in generate(tiny, 4, split=None)) \
        else "train"
    with deadline(30), pytest.raises(ConfigError, match=f"split '{split}'"):
        generate(tiny, 1, split=split)
    assert [t.problem for t in ArithEnvironment().tasks(2, split="test")] == [
        p.question for p in generate(ArithConfig(), 2, split="test")]


def test_gym_declares_and_checks_its_splits():
    env = environments.create("gym", dataset="chain_sum")
    assert tuple(env.splits) == ("train", "test")
    with deadline(10), pytest.raises(ConfigError, match="'train' or 'test'") as err:
        env.tasks(1, split="Test")
    assert "gym:chain_sum" in one_line(err)


def test_jsonl_single_file_has_no_splits_and_takes_any_name(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    env = JsonlMathEnvironment(path)
    assert env.splits == [None]
    assert env.tasks(1, split="Test") == env.tasks(1, split="train") == load_tasks(env, 1, "x")


def agent_games(tmp_path: Path) -> list[object]:
    """The agent games that can be built here without starting a simulator."""
    from environments.agent.gymnasium_game import GymnasiumGame

    games: list[object] = [GymnasiumGame(lambda: None, name="toy", action_names=["wait"])]
    if has("minigrid"):
        from environments.agent.babyai_game import BabyAIGame

        games.append(BabyAIGame())
    if has("textarena"):
        from environments.agent.textarena_game import TextArenaGame

        games.append(TextArenaGame())
    if has("textworld"):
        from environments.agent.textworld_game import TextWorldGame

        games.append(TextWorldGame(cache_dir=tmp_path))
    if has("scienceworld"):
        from environments.agent.scienceworld_game import ScienceWorldGame

        games.append(ScienceWorldGame())  # no JVM until a task is loaded
    return games


def test_agent_games_declare_splits_and_refuse_unknown_ones_before_any_work(tmp_path):
    from environments.agent.base import AgentEnvironment

    for game in agent_games(tmp_path):
        env = AgentEnvironment(game)
        assert env.splits and "test" in env.splits and "train" in env.splits, game.name
        for split in ("Test", "bogus"):
            with deadline(10), pytest.raises(ConfigError) as err:
                env.tasks(1, split=split)  # raises before a game is generated or a JVM starts
            assert game.name in one_line(err) and repr(split) in str(err.value)
            with pytest.raises(UserError, match="no split"):
                load_tasks(env, 1, split=split)
    assert not list(tmp_path.iterdir())  # TextWorld generated nothing


def test_agent_games_accept_the_dev_aliases():
    pytest.importorskip("minigrid")
    env = environments.create("babyai")
    assert [t.metadata["split"] for t in env.tasks(1, split="validation")] == ["dev"]


# ----------------------------------------------------------------------------- R2: content ids


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_ids_follow_the_content_not_the_line(tmp_path):
    rows = [{"question": "What is 2+3?", "answer": "5"},
            {"question": "Half of 1?", "answer": "1/2"},
            {"question": "Named?", "answer": "7", "id": "gsm-17"}]
    before = {t.problem: t.id for t in JsonlMathEnvironment(
        write_rows(tmp_path / "a.jsonl", rows)).tasks()}
    inserted = [{"question": "New first question?", "answer": "1"}, *rows]
    after = {t.problem: t.id for t in JsonlMathEnvironment(
        write_rows(tmp_path / "a.jsonl", inserted)).tasks()}
    assert {q: after[q] for q in before} == before  # inserting a line moves no other id
    assert before["Named?"] == "gsm-17"  # the row's own id wins
    assert len(set(after.values())) == 4
    renamed = JsonlMathEnvironment(write_rows(tmp_path / "b.jsonl", rows)).tasks()
    assert {t.problem: t.id for t in renamed} == before  # nor does the file's name


def test_jsonl_repeated_rows_are_skipped_with_their_line(tmp_path, caplog):
    row = {"question": "What is 2+3?", "answer": "5"}
    path = write_rows(tmp_path / "dup.jsonl", [row, {"question": "Other?", "answer": "1"}, row])
    with caplog.at_level(logging.WARNING):
        env = JsonlMathEnvironment(path)
    assert len(env.tasks()) == 2 and env.skipped == 1
    assert f"{path}:3" in caplog.text and f"of {path}:1" in caplog.text


# ----------------------------------------------------------------------------- non-UTF-8 files


def test_jsonl_line_that_is_not_utf8_is_skipped_and_named(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"question": "What is 2+3?", "answer": "5"}).encode()
    latin1 = json.dumps({"question": "Caf\u00e9?", "answer": "1"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + latin1.encode("latin-1") + b"\n" + good
                     .replace(b"2+3", b"3+4") + b"\n")
    with caplog.at_level(logging.WARNING):
        env = JsonlMathEnvironment(path)
    assert [t.problem for t in env.tasks()] == ["What is 2+3?", "What is 3+4?"]
    assert env.skipped == 1 and f"{path}:2" in caplog.text and "not UTF-8" in caplog.text


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_csv_or_json_file_that_is_not_utf8_is_refused_in_one_line(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    text = ("question,answer\nWhat is 2+3?,5\nCaf\u00e9?,1\n" if suffix == ".csv" else
            json.dumps([{"question": "What is 2+3?", "answer": "5"},
                        {"question": "Caf\u00e9?", "answer": "1"}], ensure_ascii=False))
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")
    with pytest.raises(ConfigError) as err:
        JsonlMathEnvironment(path)
    message = one_line(err)
    assert str(path) in message and f"byte offset {offset}" in message and "UTF-8" in message


def test_csv_with_a_byte_order_mark_reads_its_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,answer\nWhat is 2+3?,5\n")
    assert [t.reference for t in JsonlMathEnvironment(path).tasks()] == ["5"]


# ----------------------------------------------------------------------------- contracts


def build(name: str, tmp_path: Path) -> object:
    """Every registered environment, built cheaply (no game generated, no JVM started)."""
    data = write_rows(tmp_path / "qa.jsonl", [{"question": "What is 2+3?", "answer": "5"}])
    code = write_rows(tmp_path / "code.jsonl", [{"prompt": "def add(a, b):\n",
                                                 "test_list": ["assert add(1, 2) == 3"]}])
    kwargs = {"gym": {"dataset": "chain_sum"}, "jsonl": {"path": data},
              "code-jsonl": {"path": code},
              "textworld": {"cache_dir": tmp_path}, "textworld-tiny": {"cache_dir": tmp_path}}
    try:
        return environments.create(name, **kwargs.get(name, {}))
    except ImportError as err:  # an optional game package that is not installed
        pytest.skip(f"{name}: {err}")


@pytest.mark.parametrize("name", environments.names())
def test_every_registered_environment_passes_the_contract_check(name, tmp_path):
    env = build(name, tmp_path)
    try:
        capabilities = check_environment(env)
        assert capabilities.tasks, f"{name} lists no tasks"
        splits = getattr(env, "splits", None)
        assert splits is not None and len(splits) > 0, f"{name} declares no splits"
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()


def test_keep_indent_is_declared_as_a_boolean_and_decides_what_a_step_keeps():
    from environments.math.arith_env import ArithEnvironment
    from mcts_agent.contracts import action_text
    from mcts_agent.errors import PluginError

    env = ArithEnvironment()
    assert action_text(env, "  x = 1  ") == "x = 1"  # the default: stripped
    env.keep_indent = True
    assert action_text(env, "\n    x = 1  ") == "    x = 1"  # code: the indent stays
    env.keep_indent = "yes"
    with pytest.raises(PluginError, match="keep_indent"):
        check_environment(env)


@pytest.mark.parametrize("name,kwargs", [("arith", {}), ("gym", {"dataset": "chain_sum"})])
def test_math_scores_are_in_the_unit_interval_or_none(name, kwargs):
    env = environments.create(name, **kwargs)
    task = env.tasks(1, split="test")[0]
    answer = task.reference["answer"] if isinstance(task.reference, dict) else task.reference
    root = env.reset(task)
    for state in (root, *(env.step(root, f"Answer: {a}").state
                          for a in (answer, f"{answer}1", "x", ""))):
        assert checked_score(env, state, task) in (0.0, 1.0)
    assert checked_score(env, root, Task("free", task.problem)) is None  # no reference


def test_stepwise_score_is_zero_or_one_whatever_the_checker_returns():
    from environments.math.stepwise import StepwiseMath

    env = StepwiseMath(checker=lambda answer, reference: 2)  # truthy, not a bool
    task = Task("t", "q", "r")
    assert env.score(env.step(env.reset(task), "Answer: r").state, task) == 1.0


# ----------------------------------------------------------------------------- layering


def core_imports(path: Path) -> list[str]:
    """Every absolute import in ``path`` of an ``environments`` or ``critics`` module,
    including ones inside functions and ``if TYPE_CHECKING:`` blocks."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and not node.level and \
            node.module else []
        found += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                  if name.split(".")[0] in ("environments", "critics")]
    return found


def test_the_core_never_imports_plugins_by_name():
    """``mcts_agent`` reaches environments and critics through the registry only."""
    offenders = [hit for path in sorted((REPO / "mcts_agent").rglob("*.py"))
                 for hit in core_imports(path)]
    assert not offenders, offenders
    assert not (REPO / "environments" / "agent" / "react.py").exists()  # no twin of the core's


def test_importing_the_models_and_splicing_loads_no_plugin():
    code = textwrap.dedent("""
        import sys
        import mcts_agent.data.splice, mcts_agent.models.tiny, mcts_agent.models.tiny_agent
        import mcts_agent.react
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("environments", "critics")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_textworld_tiny_is_registered_from_the_environments_package():
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="mcts_agent.environments")
                if p.name == "textworld-tiny"]
    assert point.value.startswith("environments.agent.")
