"""`mcts-agent` command line. Every command is a thin shell over a Python function.

Errors: a mistake the user can fix (:class:`~mcts_agent.errors.UserError`, a bad file or
setting, an unwritable folder) is one line on stderr, exit code 2; anything else is a bug in
the toolkit or a plug-in and is said to be one (exit code 1); ``-v`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .contracts import load_tasks
from .engine import BYTES_PER_NODE, EngineConfig, Forest, SyntheticGame, search, search_fused
from .engine.synthetic import evaluate_kernel, evaluator
from .errors import ConfigError, PluginError, UserError, validation_problems
from .llm.load import BackendConfig
from .registry import PluginSpec, critics, environments, parse_value
from .search import ResultFile, SearchConfig
from .search.critic_specs import build_component, build_critic
from .search.run import (
    RunSummary,
    check_environment_runs,
    check_run_folder,
    load_policy,
    run_environment_spec,
    run_search,
)
from .trees import TreeRecord

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tree search and self-improvement for language models.")
console = Console()
errors = Console(stderr=True, highlight=False, soft_wrap=True)
VERBOSE = False

CRITIC_HELP = ("Critic, repeatable (several = a hybrid): rollout[=K], verifier, "
               "reward-model=DIR, judge[=MODEL|smollm2], hybrid=WEIGHTS.json.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="More logging, and tracebacks with errors.")] = False):
    global VERBOSE
    VERBOSE = verbose
    if not verbose:  # transformers' per-load weight bars: noise beside our own progress
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` whose errors are reported as the module docstring says."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except (typer.Exit, typer.Abort):
                raise
            # one line; the traceback only under -v. Ctrl-C too: typer would turn it into a
            # silent exit 130, and the user would not learn that the finished trees are saved
            except (Exception, KeyboardInterrupt) as err:
                raise typer.Exit(report_error(err)) from err

        return app.command(*args, **kwargs)(run)

    return register


def report_error(err: BaseException) -> int:
    """Print ``err`` as one line on stderr; its exit code (2: the user's to fix, 1: a bug)."""
    if VERBOSE:
        errors.print("".join(traceback.format_exception(err)).rstrip(), markup=False)
    message, code = describe_error(err)
    errors.print(f"error: {message}", markup=False)
    return code


def describe_error(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``err``."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; finished trees are saved and the same command resumes", 130
    if isinstance(err, ValidationError):
        return f"invalid {err.title} settings ({validation_problems(err)})", 2
    if isinstance(err, typer.TyperException) and hasattr(err, "format_message"):
        return _one_line(err.format_message()), 2
    if isinstance(err, OSError) and not isinstance(err, UserError):
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror or err}{where}: check the path, its permissions and free space", 2
    if isinstance(err, (UserError, ValueError, ImportError)) or type(err).__name__ in (
            "ServerError", "AuthenticationError", "ModelNotFoundError"):
        return _one_line(str(err)), 2
    hint = "" if VERBOSE else "; run with -v for the traceback"
    return (f"internal error, a bug in mcts-agent or a plug-in: {type(err).__name__}: "
            f"{_one_line(str(err))}{hint}"), 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_cli() -> None:
    """The ``mcts-agent`` program: the app, with errors of the command line's own parsing and
    an interrupt reported too."""
    global VERBOSE
    VERBOSE = any(arg in ("-v", "--verbose") for arg in sys.argv[1:])
    try:  # outside standalone mode a command's exit code is returned, not raised
        code = app(prog_name="mcts-agent", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except typer.Abort:
        code = report_error(KeyboardInterrupt())
    except typer.TyperException as err:  # a usage error: click's usage line and hint
        err.show()  # type: ignore[attr-defined]
        code = getattr(err, "exit_code", 2)
    except KeyboardInterrupt as err:
        code = report_error(err)
    sys.exit(code if isinstance(code, int) else 0)


Settings = TypeVar("Settings", bound=BaseModel)


def load_settings(
    kind: type[Settings], path: Path | None, section: str, overrides: dict[str, Any]
) -> Settings:
    """``kind`` from an optional YAML file (its top level or its ``section:``) plus the CLI's
    overrides (None = not given); errors become clear CLI messages."""
    data: dict[str, Any] = {}
    where = f" in {path}" if path is not None else ""
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read {path}: {_one_line(str(err))}") from err
        if not isinstance(loaded, dict) or not isinstance(loaded.get(section, loaded), dict):
            raise ConfigError(f"{path} must hold a mapping of {section} settings")
        data = dict(loaded.get(section, loaded))
        if section not in loaded and section != "ray":
            data.pop("ray", None)  # a cluster's own section beside top-level settings
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return kind(**data)
    except ValidationError as err:
        raise ConfigError(f"invalid {section} settings{where} ({validation_problems(err)})"
                          ) from err


@command()
def synthetic(
    trees: Annotated[int, typer.Option(min=1, help="Trees searched at once.")] = 64,
    simulations: Annotated[int, typer.Option(min=0, help="Simulations per tree.")] = 1024,
    leaves_per_call: Annotated[int, typer.Option(min=1, help="Leaves per tree per wave.")] = 8,
    branching: Annotated[int, typer.Option(min=1)] = 8,
    max_depth: Annotated[int, typer.Option(min=1)] = 20,
    seed: int = 0,
    fused: Annotated[bool, typer.Option(help="Run every wave inside one compiled call.")] = False,
    rule: Annotated[str | None, typer.Option(help="puct or uct.")] = None,
    virtual_loss: float | None = None,
    widen_c: Annotated[float | None, typer.Option(help="Progressive widening constant.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of engine settings.")] = None,
    out: Annotated[Path | None, typer.Option(help="Save the forest here (.npz).")] = None,
) -> None:
    """Search a synthetic hash-defined game with the tree engine alone (no model, no downloads)."""
    engine = load_settings(EngineConfig, config, "engine", {
        "rule": rule, "virtual_loss": virtual_loss, "widen_c": widen_c})
    game = SyntheticGame(seed=seed, branching=branching, max_depth=max_depth)
    forest = Forest(engine, num_trees=trees)
    start = time.perf_counter()
    if fused:
        search_fused(evaluate_kernel, game, branching, simulations, forest=forest,
                     leaves_per_call=leaves_per_call, logits=True)
    else:
        with Progress(TextColumn("[bold]searching"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} simulations"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("search", total=trees * simulations)

            def on_wave(f: Forest, wave: int) -> None:
                done = int(f.nodes.visits[f.roots].sum()) - trees
                bar.update(task, completed=done)

            search(evaluator(game), simulations, forest=forest, leaves_per_call=leaves_per_call,
                   logits=True, seed=seed, on_wave=on_wave)
    seconds = time.perf_counter() - start
    forest.check_invariants()
    print_summary(forest, seconds, trees * simulations)
    if out is not None:
        forest.save(out)
        console.print(f"forest saved to [bold]{out}[/bold]")


def print_summary(forest: Forest, seconds: float, simulations: int) -> None:
    table = Table(title="synthetic search", show_header=False)
    table.add_row("trees", str(forest.num_trees))
    table.add_row("simulations", f"{simulations:,}")
    table.add_row("nodes", f"{forest.num_nodes:,} ({forest.nbytes / 2**20:.1f} MiB, "
                  f"{BYTES_PER_NODE} B/node)")
    table.add_row("wall time", f"{seconds:.3f} s (includes JIT compile on a first run)")
    table.add_row("simulations/s", f"{simulations / max(seconds, 1e-9):,.0f}")
    chosen = forest.choose(method="visits")
    table.add_row("chosen root actions", " ".join(map(str, forest.nodes.action[chosen][:16]))
                  + (" …" if forest.num_trees > 16 else ""))
    policy = forest.root_policy(0)
    table.add_row("tree 0 root policy", json.dumps(np.round(policy, 3).tolist()))
    pv = forest.principal_variation(0)
    table.add_row("tree 0 principal line", f"{len(pv) - 1} moves, actions "
                  + " ".join(str(forest.nodes.action[n]) for n in pv[1:]))
    console.print(table)


# --------------------------------------------------------------------------- LLM tree search


@command("search")
def search_command(
    env: Annotated[str, typer.Option(help="Environment name (see `mcts-agent envs`).")] = "arith",
    env_arg: Annotated[list[str] | None, typer.Option(
        "--env-arg", help="KEY=VALUE for the environment, repeatable (e.g. path=data.jsonl, "
        "dataset=chain_sum, max_operand=50).")] = None,
    tasks: Annotated[int, typer.Option(min=1, help="Tasks from the environment's split.")] = 20,
    split: Annotated[str, typer.Option(help="train or test (held out).")] = "test",
    model: Annotated[str | None, typer.Option(help="Local model folder (default: the shipped "
                                              "tiny reasoner), or the served model name with "
                                              "--backend openai.")] = None,
    device: str = "cpu",
    backend: Annotated[str, typer.Option(help="hf, vllm or openai (an OpenAI-compatible "
                                         "server; --model is then its model name).")] = "hf",
    backend_arg: Annotated[list[str] | None, typer.Option(
        "--backend-arg", help="KEY=VALUE for the backend, repeatable (e.g. "
        "base_url=http://127.0.0.1:8000/v1, kv_cache_gb=2, max_concurrency=64).")] = None,
    cache: Annotated[bool, typer.Option(help="Keep the model's answers in "
                                       "OUT/responses.sqlite (re-runs and resumes reuse "
                                       "them).")] = True,
    mode: Annotated[str | None, typer.Option(help="data (verifier may use the reference) or "
                                             "inference (no reference).")] = None,
    simulations: Annotated[int | None, typer.Option(help="Leaf expansions per tree.")] = None,
    expand_n: Annotated[int | None, typer.Option(help="Candidates per expansion.")] = None,
    max_step_tokens: Annotated[int | None, typer.Option(
        help="Most tokens of one step (a line; a whole program with steps=program).")] = None,
    rollouts: Annotated[int, typer.Option(min=1, help="Monte Carlo rollouts per node.")] = 4,
    critic: Annotated[list[str] | None, typer.Option(
        help=CRITIC_HELP + " Default: rollout.")] = None,
    sibling_feedback: Annotated[int | None, typer.Option(
        help="Show the critic's feedback on up to this many judged siblings when a node is "
        "expanded again (SWE-Search).")] = None,
    discriminator: Annotated[str | None, typer.Option(
        help="Inference mode: what picks the final trajectory among the finished ones: value "
        "or judge[=MODEL] (SWE-Search).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget per tree.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Wall-time budget per tree.")] = None,
    driver: Annotated[str | None, typer.Option(
        help="wave (every tree's round together, one batched call per wave), async (each "
        "tree on its own, calls sent as soon as the last returns; fastest on vllm and openai) "
        "or auto (async on vllm and openai, else wave; the default). Same trees.")] = None,
    seed: int | None = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of search settings.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (trees.jsonl, config, summary).")] = Path(
        "runs/search"),
    baselines: Annotated[bool, typer.Option(help="Also run greedy and best-of-N.")] = True,
    allow_changed: Annotated[bool, typer.Option(
        help="Resume into a run folder whose trees were searched with other settings "
        "(config.yaml keeps the earlier ones under history).")] = False,
    ray: Annotated[str | None, typer.Option(
        help="Grow the trees on a Ray cluster (pip install 'mcts-agent[ray]'): local (start "
        "one here), auto (the one `ray start` runs) or HOST:PORT. This process writes "
        "trees.jsonl. More settings under ray: in --config.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="--ray: search actors, each with its own policy (default 2).")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        min=0, help="--ray: GPUs per actor (use with --device cuda).")] = None,
) -> None:
    """Tree search on an environment's tasks with a language model; resumable."""
    settings = load_settings(SearchConfig, config, "search", {
        "mode": mode, "simulations": simulations, "expand_n": expand_n,
        "max_step_tokens": max_step_tokens,
        "max_tokens": max_tokens, "max_seconds": max_seconds, "seed": seed,
        "sibling_feedback": sibling_feedback, "discriminator": discriminator,
        "driver": driver})
    spec = _env_spec(env, env_arg)
    environment = environments.create(spec.name, **spec.args)
    # everything that can be checked without the model is checked before it loads
    task_list = load_tasks(environment, tasks, split=split)
    if task_list:
        check_environment_runs(environment, task_list[0])
    check_run_folder(out, {"environment": spec.to_json(), "split": split,
                           "search": settings.model_dump(mode="json")}, allow_changed)
    critic_specs = critic or ["rollout"]
    check_critic_names(critic_specs)
    cluster = ray_settings(config, ray, workers, gpus_per_worker, device)
    if cluster is not None:  # the trees grow on the cluster; this process writes them
        summary = _search_on_ray(spec, task_list, split, settings, cluster, critic_specs,
                                 model=model, backend=_backend_config(backend, backend_arg),
                                 device=device, rollouts=rollouts, out=out,
                                 baselines=baselines, allow_changed=allow_changed)
        return _report_search(summary, out, environment)
    policy = load_policy(model, backend=_backend_config(backend, backend_arg), device=device,
                         cache=out / "responses.sqlite" if cache else None)
    try:
        search_critic = build_critic(critic_specs, policy, settings, rollouts)
        done_before = len(ResultFile(out / "trees.jsonl").done_ids() & {t.id for t in task_list})
        with Progress(TextColumn("[bold]searching"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("trees"), TimeElapsedColumn(), console=console) as bar:
            job = bar.add_task("trees", total=len(task_list), completed=done_before)
            summary, _ = run_search(
                environment, tasks=task_list, split=split, env_spec=spec, policy=policy,
                config=settings, critic=search_critic, out_dir=out, baselines=baselines,
                on_result=lambda r: bar.advance(job), cache=cache, allow_changed=allow_changed)
    finally:
        _close(policy)
    _report_search(summary, out, environment)


def _report_search(summary: RunSummary, out: Path, environment: Any) -> None:
    """The search's table and where its trees are; an environment that failed every step is
    an error."""
    _print_search_summary(summary)
    console.print(f"trees: [bold]{out / 'trees.jsonl'}[/bold]  ·  look at one with "
                  f"[bold]mcts-agent show {out}[/bold]")
    if summary.searched and summary.statuses.get("environment_error") == summary.searched:
        raise UserError(f"environment {environment.name!r} raised on every step of all "
                        f"{summary.searched} trees searched (first: {summary.first_error}); fix "
                        "the environment (-v logs each failure)")


def ray_settings(config: Path | None, address: str | None, workers: int | None,
                 gpus_per_worker: float | None, device: str | None) -> Any:
    """The cluster a run asks for (``--ray`` or a ``ray:`` section in ``--config``), as a
    :class:`~mcts_agent.scale.RayConfig`; None to search in this process."""
    from .scale import RAY_MISSING, RayConfig, ray_available

    section = _yaml_section(config, "ray")
    if address is None and section is None:
        if workers is not None or gpus_per_worker is not None:
            raise ConfigError("--workers and --gpus-per-worker go with --ray (local, auto or "
                              "HOST:PORT)")
        return None
    if not ray_available():
        raise UserError(RAY_MISSING)
    overrides = {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker}
    cluster = load_settings(RayConfig, None, "ray", {**(section or {}), **{
        k: v for k, v in overrides.items() if v is not None}})
    if cluster.gpus_per_worker and device == "cpu":
        raise ConfigError(f"--gpus-per-worker {cluster.gpus_per_worker:g} with --device cpu "
                          "leaves the GPUs idle: pass --device cuda")
    return cluster


def _yaml_section(path: Path | None, section: str) -> dict[str, Any] | None:
    """The ``section:`` mapping of a YAML settings file, None when it has none."""
    if path is None:
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {_one_line(str(err))}") from err
    value = loaded.get(section) if isinstance(loaded, dict) else None
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path}: {section}: must hold a mapping of {section} settings")
    return value


def _search_on_ray(spec: PluginSpec, tasks: list, split: str, settings: SearchConfig,
                   cluster: Any, critic: list[str], *, out: Path, **options: Any) -> RunSummary:
    """``search --ray``: the trees grown by the cluster's workers, with the usual progress."""
    from .scale.ray_search import run_ray_search

    done_before = len(ResultFile(out / "trees.jsonl").done_ids() & {t.id for t in tasks})
    with Progress(TextColumn("[bold]searching on Ray"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("trees"), TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("trees", total=len(tasks), completed=done_before)
        summary, _ = run_ray_search(
            spec, ray=cluster, tasks=tasks, split=split, config=settings, critic=critic,
            out_dir=out, on_result=lambda r: bar.advance(job),
            report=lambda line: bar.console.print(line, highlight=False, markup=False),
            **options)
    return summary


def _close(policy: Any) -> None:
    """Close a policy and the one it wraps (a response cache's file, a vLLM engine, an HTTP
    pool), where they have something to close."""
    for part in (policy, getattr(policy, "__dict__", {}).get("policy")):
        if hasattr(part, "close"):
            part.close()


def _backend_config(name: str, pairs: list[str] | None) -> BackendConfig:
    """The backend settings named on the command line (errors say which setting is wrong)."""
    return BackendConfig(name=name, **{k: parse_value(v) for k, v in _key_texts(
        pairs or [], "--backend-arg").items()})


def check_critic_names(specs: list[str]) -> None:
    """Resolve the critics ``specs`` name (a plug-in is imported) before a model loads: an
    unknown name, a plug-in that fails to import or a critic class without ``evaluate`` is
    refused at once."""
    for spec in specs:
        name = spec.strip().partition("=")[0]
        factory = critics.factory(name)
        if isinstance(factory, type) and not callable(getattr(factory, "evaluate", None)):
            raise PluginError(f"critic {name!r} ({factory.__module__}.{factory.__qualname__}) "
                              "has no evaluate(nodes) method (Critic contract in "
                              "mcts_agent.contracts)")


def _key_texts(pairs: list[str], option: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} wants KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _env_spec(name: str, env_arg: list[str] | None) -> PluginSpec:
    """The environment named on the command line, its ``--env-arg`` s read by the types its
    factory declares (see :meth:`~mcts_agent.registry.Registry.parse_args`)."""
    return PluginSpec(name, environments.parse_args(name, _key_texts(env_arg or [],
                                                                     "--env-arg")))


def _print_search_summary(summary: RunSummary) -> None:
    table = Table(title=f"search ({summary.mode} mode, {summary.tasks} tasks)")
    table.add_column("method")
    table.add_column("solved", justify="right")
    table.add_column("tokens", justify="right")
    table.add_row("MCTS", str(summary.mcts_solved), f"{summary.tokens:,}")
    if summary.greedy_solved is not None:
        table.add_row("greedy", str(summary.greedy_solved), "")
        table.add_row("best-of-N (same tokens)", str(summary.best_of_n_solved),
                      f"{summary.baseline_tokens:,}")
    console.print(table)
    earlier = summary.tasks - summary.searched
    if summary.searched:
        rate = summary.searched_tokens / max(summary.seconds, 1e-9)
        console.print(f"{summary.searched} trees searched now, {summary.searched_tokens:,} tokens "
                      f"in {summary.seconds:.1f} s ({rate:,.0f} tokens/s)"
                      + (f"; {earlier} done before" if earlier else ""))
    else:
        console.print(f"all {summary.tasks} trees were done before; nothing searched now")
    unfinished = {k: v for k, v in summary.statuses.items() if k != "finished"}
    if unfinished:
        console.print("[yellow]trees not grown:[/yellow] " + ", ".join(
            f"{v} {k.replace('_', ' ')}" for k, v in sorted(unfinished.items())))
    if summary.environment_errors:
        console.print(f"[yellow]environment errors:[/yellow] {summary.environment_errors} steps "
                      f"raised (first: {summary.first_error}); -v logs each one", markup=True,
                      highlight=False)


@command()
def show(
    trees: Annotated[Path, typer.Argument(help="A run folder or its trees.jsonl.")],
    task: Annotated[str | None, typer.Option(help="Task id; default: the first tree.")] = None,
    depth: Annotated[int, typer.Option(help="Deepest level shown.")] = 6,
) -> None:
    """Print one tree as an indented outline (visits, value, critic, verdict)."""
    file = ResultFile(_trees_file(trees))
    results = file.read()
    _report_skipped(file)
    if not results:
        raise UserError(f"{file.path} holds no readable trees")
    chosen = next((r for r in results if task in (None, r.task.id)), None)
    if chosen is None:
        raise UserError(f"no tree for task {task!r} in {file.path}")
    status = "" if chosen.status == "finished" else f"; {chosen.status.replace('_', ' ')}"
    console.print(f"[bold]{rich_escape(chosen.task.id)}[/bold]: " + rich_escape(
        f"{chosen.task.problem}  (reference {chosen.task.reference}; answer {chosen.answer}; "
        f"solved {chosen.solved}{status})"), highlight=False)
    children = chosen.children()

    def outline(i: int, indent: int) -> None:
        node = chosen.nodes[i]
        mark = {1.0: " [green]✓[/green]", 0.0: " [red]✗[/red]"}.get(node.score, "")
        value = "—" if node.value is None else f"{node.value:.2f}"
        label = rich_escape(node.action or "(root)")
        console.print(f"{'  ' * indent}{label}  [dim]N={node.visits} V={value}[/dim]{mark}",
                      highlight=False)
        if indent < depth:
            for child in sorted(children[i], key=lambda c: -chosen.nodes[c].visits):
                outline(child, indent + 1)

    outline(0, 0)


@command()
def view(
    run: Annotated[Path, typer.Argument(help="A search run folder (or its trees.jsonl), an "
                                        "`iterate` folder or an `eval-critic` report folder.")],
    task: Annotated[str | None, typer.Option(help="Task id to open first.")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write; default RUN/view.html."
                                             )] = None,
    pairs: Annotated[Path | None, typer.Option(help="Mined rows to link on the trees: the "
                                               "folder `mcts-agent pairs` wrote or its "
                                               "pairs.jsonl; default RUN/data.")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    watch: Annotated[bool, typer.Option(help="Serve a page on 127.0.0.1 that follows a run "
                                        "in progress (Ctrl-C stops it).")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="--watch port (0: any free "
                                      "one).")] = 0,
) -> None:
    """Look at the trees: one self-contained HTML page (works offline from disk) with the
    task list, each tree, its nodes, pairs and baselines; dashboards for iterate and
    eval-critic folders."""
    import webbrowser

    from .viewer import write_view
    from .viewer.watch import serve

    if watch:
        server = serve(run, port=port, task=task, pairs=pairs)
        try:  # the address is printed inside: a Ctrl-C as soon as it shows is a clean stop
            console.print(f"watching [bold]{run}[/bold] at [bold]{server.url}[/bold] "
                          "(127.0.0.1 only; Ctrl-C stops)")
            if open_:
                webbrowser.open(server.url)
            while server.thread is not None and server.thread.is_alive():
                server.thread.join(0.5)
        except KeyboardInterrupt:
            console.print("stopped")
        finally:
            server.stop()
        return
    written = write_view(run, out, task=task, pairs=pairs)
    console.print(f"page: [bold]{written[0]}[/bold]" + (
        f" (+ {len(written) - 1} round pages beside it)" if len(written) > 1 else ""))
    if open_:
        webbrowser.open(written[0].resolve().as_uri())


def _report_skipped(file: ResultFile) -> None:
    """Say how many lines of a run file were not tree records (each is logged with -v)."""
    if file.skipped:
        first = min(file.skipped)
        console.print(f"[yellow]skipped {len(file.skipped)} unreadable line(s) of {file.path}"
                      f"[/yellow] (line {first}: {file.skipped[first]})", highlight=False)


@command()
def demo(
    tasks: Annotated[int, typer.Option(min=1, help="Held-out arith problems.")] = 20,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
) -> None:
    """The whole path in a few minutes on a CPU: the shipped tiny reasoner, tree search on
    held-out arithmetic, greedy and best-of-N beside it, trees written to disk."""
    console.print("[bold]mcts-agent demo[/bold]: tree search with the shipped tiny reasoner "
                  "(1M parameters, trained by `python -m mcts_agent.models.tiny`) on held-out "
                  "arithmetic problems, data mode (the verifier knows the answers).")
    search_command(env="arith", env_arg=None, tasks=tasks, split="test", model=None,
                   device="cpu", mode="data", simulations=16, expand_n=4, rollouts=4,
                   max_tokens=None, max_seconds=None, seed=0, config=None, out=out,
                   baselines=True)
    console.print(f"\nnext: [bold]mcts-agent show {out / 'trees.jsonl'}[/bold] to read a tree, "
                  "[bold]mcts-agent search --mode inference[/bold] to search without answers, "
                  "[bold]mcts-agent search --help[/bold] for budgets, models and settings.")


@command()
def pairs(
    run: Annotated[Path, typer.Argument(help="A search run folder (or its trees.jsonl).")],
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN/data.")] = None,
    kind: Annotated[str, typer.Option(help="pairs (preference pairs), sft (best verified "
                                      "paths) or stepwise (per-step labels).")] = "pairs",
    strategy: Annotated[str | None, typer.Option(
        help="sibling, path, outcome, first_error or corrupted.")] = None,
    completion: Annotated[str | None, typer.Option(help="step or continuation.")] = None,
    conversational: Annotated[bool | None, typer.Option(help="Chat-message rows.")] = None,
    env: Annotated[str | None, typer.Option(help="Environment; default: the run's.")] = None,
    env_arg: Annotated[list[str] | None, typer.Option(
        "--env-arg", help="KEY=VALUE for the environment, repeatable.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of pair settings.")] = None,
) -> None:
    """Mine training data from finished trees, in TRL's formats (JSONL + Parquet + card)."""
    from .data import PairConfig, mine_rows, write_rows

    trees = _trees_file(run)
    folder = trees.parent
    environment = _run_environment(folder, env, env_arg)
    results = _read_trees(trees)
    settings = load_settings(PairConfig, config, "pairs", {
        "strategy": strategy, "completion": completion, "conversational": conversational})
    rows, stats = mine_rows(kind, results, environment, settings)  # type: ignore[arg-type]
    target = out or folder / "data"
    paths = write_rows(rows, target, kind, stats=stats,
                       description=f"mined from {trees} with `mcts-agent pairs`")
    _print_counts(f"{kind} from {len(results)} trees", stats)
    console.print("written: " + ", ".join(str(p) for p in paths.values()))


def _print_counts(title: str, counts: Any) -> None:
    table = Table(title=title)
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in sorted(counts.items()):
        table.add_row(str(key), str(value))
    console.print(table)


@command()
def splice(
    run: Annotated[Path, typer.Argument(help="A search run folder (or its trees.jsonl) of an "
                                        "agent environment.")],
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN/data.")] = None,
    alpha: Annotated[float | None, typer.Option(help="A good trajectory's value ≥ this.")] = None,
    beta: Annotated[float | None, typer.Option(help="Value gap good − bad ≥ this.")] = None,
    first_bad: Annotated[str | None, typer.Option(
        help="What finds the first bad step: value, critic or both.")] = None,
    critic: Annotated[list[str] | None, typer.Option(
        help=CRITIC_HELP + " Used by --first-bad critic/both (e.g. judge).")] = None,
    model: Annotated[Path | None, typer.Option(help="The policy folder, for a judge that "
                                               "uses it.")] = None,
    success_per_tree: Annotated[int, typer.Option(min=0, help="Won trajectories per tree "
                                                  "added to the per-turn rows.")] = 1,
    env: Annotated[str | None, typer.Option(help="Environment; default: the run's.")] = None,
    env_arg: Annotated[list[str] | None, typer.Option(
        "--env-arg", help="KEY=VALUE for the environment, repeatable.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of splice settings.")] = None,
) -> None:
    """Failure → recovery dialogues (Agent-R) from agent trees, each validated by replay.

    Writes `spliced` (TRL conversational prompt/completion: the bad prefix, then the revision
    and the good continuation) and `splice_turns` (one SFT row per trained turn, prompted as
    the search prompts; what `iterate --sft-data splice` trains on)."""
    from .data import write_rows
    from .data.splice import SpliceConfig, splice_rows

    trees = _trees_file(run)
    folder = trees.parent
    environment = _run_environment(folder, env, env_arg)
    results = _read_trees(trees)
    settings = load_settings(SpliceConfig, config, "splice", {
        "alpha": alpha, "beta": beta, "first_bad": first_bad})
    judge = build_critic(critic, load_policy(model), SearchConfig(mode="inference")) if (
        critic) else None
    dialogues, turns, stats = splice_rows(results, environment, settings, judge,
                                          success_per_tree=success_per_tree)
    target = out or folder / "data"
    write_rows(dialogues, target, "spliced", stats=stats,
               description=f"failure → recovery dialogues from {trees} (`mcts-agent splice`)")
    paths = write_rows(turns, target, "splice_turns", stats=stats,
                       description="per-turn SFT rows: splice revisions and continuations, "
                       "and won trajectories")
    _print_counts(f"splices from {len(results)} trees", stats)
    console.print(f"written: {target / 'spliced.jsonl'}, {paths['jsonl']}")


def _trees_file(run: Path) -> Path:
    """The trees.jsonl of a run folder (or the file itself); a usage error if there is none."""
    trees = run / "trees.jsonl" if run.is_dir() else run
    if not trees.is_file():
        raise UserError(f"no trees at {trees}; pass a run folder of `mcts-agent search` or "
                        "its trees.jsonl")
    return trees


def _read_trees(trees: Path) -> list[TreeRecord]:
    """The readable trees of a run file (unreadable lines are skipped and reported)."""
    file = ResultFile(trees)
    results = file.read()
    _report_skipped(file)
    return results


def _read_rows(data: Path) -> list[dict[str, Any]]:
    """Dataset rows from a .jsonl / .parquet file or a folder of them; usage errors if not."""
    from .data import read_rows

    if not data.exists():
        raise UserError(f"{data} does not exist; pass rows written by `mcts-agent pairs`")
    return read_rows(data)


def _run_environment(folder: Path, env: str | None, env_arg: list[str] | None) -> Any:
    """The environment a run's trees were grown in, rebuilt from its config.yaml with the
    same arguments, unless ``--env`` names another (``--env-arg`` s then go to it; given
    alone they change the run's arguments)."""
    spec = run_environment_spec(folder)
    if env is not None:
        spec = _env_spec(env, env_arg)
    elif spec is None:
        raise UserError(f"{folder} has no config.yaml naming its environment; pass --env "
                        "(and its --env-arg s)")
    elif ":" in spec.name or spec.name not in environments.names():
        raise UserError(f"{folder}/config.yaml names environment {spec.name!r}, which is not "
                        "a registered name (an older run's label); pass --env and its --env-arg s")
    elif spec.args is None:  # built in Python: its arguments were not recorded
        spec = _env_spec(spec.name, env_arg)
        console.print(f"[yellow]{rich_escape(str(folder))}/config.yaml does not record how "
                      f"environment {spec.name!r} was built; using {spec.args or 'its defaults'}"
                      "[/yellow] (--env-arg to change)", highlight=False)
    elif env_arg:
        spec = PluginSpec(spec.name, {**spec.args, **_env_spec(spec.name, env_arg).args})
    return environments.create(spec.name, **spec.args)


@command()
def train(
    data: Annotated[Path, typer.Argument(help="Rows to train on: .jsonl, .parquet or a folder "
                                       "written by `mcts-agent pairs`.")],
    out: Annotated[Path, typer.Option(help="Folder for the trained model.")],
    model: Annotated[Path | None, typer.Option(help="Starting model folder; default: the "
                                               "shipped tiny reasoner.")] = None,
    method: Annotated[str | None, typer.Option(help="dpo (pairs) or sft (solutions).")] = None,
    reference: Annotated[Path | None, typer.Option(help="DPO reference model; default: the "
                                                   "starting model.")] = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta.")] = None,
    nll_weight: Annotated[float | None, typer.Option(help="DPO + NLL weight.")] = None,
    pair_weights: Annotated[str | None, typer.Option(
        help="Draw pairs in proportion to a column: none, confidence or margin.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of training settings.")] = None,
) -> None:
    """Train a policy on mined rows with TRL (DPO on pairs, SFT on solutions)."""
    from .models.tiny import TINY_ARITH_DIR
    from .train import TrainConfig, train_policy

    settings = load_settings(TrainConfig, config, "train", {
        "method": method, "epochs": epochs, "learning_rate": learning_rate,
        "batch_size": batch_size, "beta": beta, "nll_weight": nll_weight,
        "pair_weights": pair_weights})
    rows = _read_rows(data)
    report = train_policy(model or TINY_ARITH_DIR, rows, out, settings, reference=reference)
    console.print(f"trained {report.method} on {report.rows} rows: {report.steps} steps in "
                  f"{report.seconds:.1f} s, loss {report.loss:.4f}; model in [bold]{out}[/bold]")


@command("train-rm")
def train_rm(
    data: Annotated[Path, typer.Argument(help="Stepwise rows (`mcts-agent pairs RUN --kind "
                                       "stepwise`): .jsonl, .parquet or their folder.")],
    out: Annotated[Path, typer.Option(help="Folder for the reward model.")],
    model: Annotated[Path | None, typer.Option(help="Backbone model folder; default: the "
                                               "shipped tiny reasoner.")] = None,
    target: Annotated[str | None, typer.Option(help="values (Monte Carlo estimates) or "
                                               "labels (thresholded).")] = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of reward-model settings.")] = None,
) -> None:
    """Train a value / process reward model on stepwise labels; use it with
    `--critic reward-model=OUT`."""
    from .train.reward_model import RewardModelConfig, train_reward_model

    settings = load_settings(RewardModelConfig, config, "reward_model", {
        "target": target, "epochs": epochs, "learning_rate": learning_rate,
        "batch_size": batch_size})
    rows = _read_rows(data)
    report = train_reward_model(rows, out, base_model=model, config=settings)
    console.print(f"reward model trained on {report.prefixes} prefixes in {report.seconds:.1f} s;"
                  f" validation AUROC {report.val_auroc:.3f}, Brier {report.val_brier:.3f}; "
                  f"in [bold]{out}[/bold]")


@command("eval-critic")
def eval_critic(
    run: Annotated[Path, typer.Argument(help="A search run folder (or its trees.jsonl).")],
    critic: Annotated[list[str], typer.Option(help=CRITIC_HELP)],
    out: Annotated[Path | None, typer.Option(help="Report folder; default RUN/critics.")] = None,
    model: Annotated[Path | None, typer.Option(help="Policy for rollouts and the default "
                                               "judge; default: the tiny reasoner.")] = None,
    mode: Annotated[str, typer.Option(help="inference (critics see no reference) or data.")] = (
        "inference"),
    max_nodes_per_tree: Annotated[int | None, typer.Option(
        help="Score a random sample of this many labelled nodes per tree.")] = None,
    rollouts: Annotated[int, typer.Option(min=1, help="Rollouts per node (rollout).")] = 4,
    env: Annotated[str | None, typer.Option(help="Environment; default: the run's.")] = None,
    env_arg: Annotated[list[str] | None, typer.Option("--env-arg")] = None,
    seed: int = 0,
) -> None:
    """Each critic's AUROC, Brier score and calibration against verified outcomes on saved
    trees: a table, critics.json and a reliability plot."""
    from .critic_eval import evaluate_critics, markdown_table, write_report

    nodes, critics_, folder = _critic_setup(run, critic, model, mode, max_nodes_per_tree,
                                            rollouts, env, env_arg, seed)
    with _node_progress(len(nodes) * len(critics_)) as advance:
        scores, _ = evaluate_critics(critics_, nodes, progress=advance)
    target = write_report(scores, out or folder / "critics", {"run": str(run), "mode": mode})
    console.print(markdown_table(scores))
    console.print(f"report: [bold]{target}[/bold] (critics.md, critics.json, reliability.png)")


@command("fit-hybrid")
def fit_hybrid_command(
    run: Annotated[Path, typer.Argument(help="A search run folder (or its trees.jsonl).")],
    critic: Annotated[list[str], typer.Option(help="Component critics (two or more): "
                                              + CRITIC_HELP)],
    out: Annotated[Path, typer.Option(help="Weights file (JSON) for --critic hybrid=FILE.")],
    model: Annotated[Path | None, typer.Option(help="Policy for rollouts and the default "
                                               "judge; default: the tiny reasoner.")] = None,
    max_nodes_per_tree: Annotated[int | None, typer.Option(
        help="Fit on a random sample of this many labelled nodes per tree.")] = None,
    rollouts: Annotated[int, typer.Option(min=1, help="Rollouts per node (rollout).")] = 4,
    l2: Annotated[float, typer.Option(min=0, help="L2 penalty on the weights.")] = 1e-2,
    env: Annotated[str | None, typer.Option(help="Environment; default: the run's.")] = None,
    env_arg: Annotated[list[str] | None, typer.Option("--env-arg")] = None,
    seed: int = 0,
) -> None:
    """Fit hybrid weights (logistic regression on the critics' logits) against verified
    outcomes on saved trees; search with them via `--critic hybrid=OUT`."""
    from .critic_eval import evaluate_critics, fit_hybrid, markdown_table

    nodes, critics_, _ = _critic_setup(run, critic, model, "inference", max_nodes_per_tree,
                                       rollouts, env, env_arg, seed)
    with _node_progress(len(nodes) * len(critics_)) as advance:
        scores, values = evaluate_critics(critics_, nodes, progress=advance)
    weights, score = fit_hybrid(values, nodes, {spec.partition("=")[0]: spec for spec in critic},
                                l2=l2, source=str(run))
    weights.save(out)
    console.print(markdown_table({**scores, "hybrid (in-sample)": score}))
    console.print("weights: " + ", ".join(f"{c} {w:+.3f}" for c, w in zip(
        weights.components, weights.weights, strict=True)) + f", bias {weights.bias:+.3f}")
    console.print(f"saved [bold]{out}[/bold]; measure it on other trees with "
                  f"`mcts-agent eval-critic RUN --critic hybrid={out}`")


def _critic_setup(run: Path, specs: list[str], model: Path | None, mode: str,
                  max_nodes: int | None, rollouts: int, env: str | None,
                  env_arg: list[str] | None, seed: int) -> tuple[list, dict, Path]:
    """Labelled nodes of a run's trees and the critics the specs name."""
    from collections import Counter

    from .data.labels import labelled_nodes

    trees = _trees_file(run)
    environment = _run_environment(trees.parent, env, env_arg)
    counts: Counter = Counter()
    nodes = labelled_nodes(_read_trees(trees), environment, max_per_tree=max_nodes, seed=seed,
                           counts=counts)
    if not nodes:
        raise UserError(f"no labelled nodes in {trees} ({dict(counts)}): critics are measured "
                        "against tasks with reference answers")
    settings = SearchConfig(mode=mode, seed=seed)  # type: ignore[arg-type]
    policy = load_policy(model)
    built = dict(build_component(spec, policy, settings, rollouts) for spec in specs)
    if len(built) != len(specs):
        raise ConfigError(f"each critic may be named once, got {specs}")
    console.print(f"{len(nodes):,} labelled nodes ({sum(n.label for n in nodes):,} right) from "
                  f"{counts['trees']} trees; skipped: {counts['unlabelled']} unlabelled")
    return nodes, built, trees.parent


@contextmanager
def _node_progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over scored nodes; yields its advance function."""
    with Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("nodes"), TimeElapsedColumn(), console=console) as progress:
        job = progress.add_task("nodes", total=total)
        yield lambda n: progress.advance(job, n)


@command("iterate")
def iterate_command(
    out: Annotated[Path, typer.Option(help="Run folder (resumes if it exists).")] = Path(
        "runs/iterate"),
    env: Annotated[str | None, typer.Option(help="Environment name.")] = None,
    env_arg: Annotated[list[str] | None, typer.Option(
        "--env-arg", help="KEY=VALUE for the environment, repeatable.")] = None,
    model: Annotated[Path | None, typer.Option(help="Starting model folder.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Search → train rounds.")] = None,
    tasks: Annotated[int | None, typer.Option(help="Training tasks searched per round.")] = None,
    eval_tasks: Annotated[int | None, typer.Option(help="Held-out tasks.")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Pairs: sibling, path, outcome, first_error or corrupted.")] = None,
    bstar: Annotated[bool, typer.Option(
        "--bstar", help="B-STaR: choose each round's search temperature and pair threshold "
        "by the balance score (candidates under balance: in --config).")] = False,
    method: Annotated[str | None, typer.Option(help="dpo or sft.")] = None,
    sft_data: Annotated[str | None, typer.Option(
        help="SFT on verified solutions, or (agents) on Agent-R splices + wins: solutions or "
        "splice.")] = None,
    simulations: Annotated[int | None, typer.Option(help="Leaf expansions per tree.")] = None,
    backend: Annotated[str | None, typer.Option(
        help="hf or vllm (the engine is started once and reloaded with each round's "
        "weights).")] = None,
    backend_arg: Annotated[list[str] | None, typer.Option(
        "--backend-arg", help="KEY=VALUE for the backend, repeatable.")] = None,
    seed: int | None = None,
    config: Annotated[Path | None, typer.Option(help="YAML file: iterate settings, with "
                                                "search:, pairs:, train: and backend: "
                                                "sections.")] = None,
    ray: Annotated[str | None, typer.Option(
        help="Search and evaluate on a Ray cluster: local, auto or HOST:PORT (training "
        "stays a TRL run here). More settings under ray: in --config.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="--ray: search actors.")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        min=0, help="--ray: GPUs per actor.")] = None,
) -> None:
    """Self-improvement: rounds of search → pairs → training → held-out evaluation."""
    from .train.iterate import IterateConfig, iterate

    base = load_settings(IterateConfig, config, "iterate", {
        "env": env, "model": str(model) if model else None, "rounds": rounds,
        "tasks_per_round": tasks, "eval_tasks": eval_tasks, "seed": seed,
        "sft_data": sft_data})
    merged = base.model_dump()
    if env_arg:
        merged["env_args"] = environments.parse_args(base.env, _key_texts(env_arg, "--env-arg"))
    for section, key, value in (("pairs", "strategy", strategy), ("train", "method", method),
                                ("search", "simulations", simulations),
                                ("backend", "name", backend)):
        if value is not None:
            merged[section][key] = value
    if bstar and merged.get("balance") is None:
        merged["balance"] = {}
    merged["backend"].update({k: parse_value(v) for k, v in _key_texts(
        backend_arg or [], "--backend-arg").items()})
    cluster = {k: v for k, v in (("address", ray), ("workers", workers),
                                 ("gpus_per_worker", gpus_per_worker)) if v is not None}
    if cluster and ray is None and merged.get("ray") is None:
        raise ConfigError("--workers and --gpus-per-worker go with --ray (local, auto or "
                          "HOST:PORT)")
    if cluster:
        merged["ray"] = {**(merged.get("ray") or {}), **cluster}
    settings = IterateConfig(**merged)
    searched = sum(len(ResultFile(f).done_ids()) for f in out.glob("round_*/search/trees.jsonl"))
    with Progress(TextColumn("[bold]trees searched"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("trees", total=settings.rounds * settings.tasks_per_round,
                           completed=searched)
        rows = iterate(settings, out, on_tree=lambda _: bar.advance(job),
                       report=lambda line: bar.console.print(line, highlight=False))
    console.print((out / "rounds.md").read_text())
    console.print(f"table: [bold]{out / 'rounds.md'}[/bold]  ·  plot: "
                  f"[bold]{out / 'rounds.png'}[/bold]  ·  final model: {rows[-1]['model']}")


@command()
def envs() -> None:
    """List the environments and critics that are installed (built-in and plug-ins)."""
    console.print("environments: " + ", ".join(environments.names()))
    console.print("critics: " + ", ".join(critics.names()))


if __name__ == "__main__":
    app()
