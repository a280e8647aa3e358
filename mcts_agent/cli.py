"""`mcts-agent` command line. Every command is a thin shell over a Python function."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .engine import BYTES_PER_NODE, EngineConfig, Forest, SyntheticGame, search, search_fused
from .engine.synthetic import evaluate_kernel, evaluator

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Tree search and self-improvement for language models.")
console = Console()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More logging.")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def load_engine_config(path: Path | None, overrides: dict[str, Any]) -> EngineConfig:
    """An EngineConfig from an optional YAML file (top level or under ``engine:``) + overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise typer.BadParameter(f"cannot read {path}: {err}") from err
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{path} must hold a mapping of engine settings")
        data = loaded.get("engine", loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return EngineConfig(**data)
    except ValidationError as err:
        raise typer.BadParameter(f"invalid engine settings:\n{err}") from err


@app.command()
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
    engine = load_engine_config(config, {"rule": rule, "virtual_loss": virtual_loss,
                                         "widen_c": widen_c})
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


if __name__ == "__main__":
    app()
