"""Search, evaluation and data generation on a Ray cluster (the optional ``ray`` extra).

``pip install -e '.[ray]'``. Nothing here imports ray at import time: ``import mcts_agent``
(and this package) never loads it; :mod:`mcts_agent.scale.ray_search` does, when a run asks
for a cluster. What runs where:

* the **driver** (the process that called ``search --ray`` or :func:`run_ray_search`) owns the
  run folder: it checks the settings, hands tasks to the workers in chunks, and appends every
  tree that comes back to the one ``trees.jsonl`` through the usual
  :class:`~mcts_agent.trees.ResultFile` (fsynced, each task once, resumable);
* each **worker** is a Ray actor holding its own policy (HF or vLLM on its GPU, or a client of
  an OpenAI-compatible server) and critic, running the ordinary
  :class:`~mcts_agent.search.driver.TreeSearch` on its chunk and streaming finished trees
  back one by one.

Seeds are local to a tree, so the trees are the ones a single process grows.
"""

from __future__ import annotations

import importlib.util

from pydantic import Field, field_validator

from ..settings import Settings

RAY_MISSING = ("Ray is not installed: pip install 'mcts-agent[ray]' (or pip install "
               "'ray>=2.9'), or drop --ray to search in this process")


def ray_available() -> bool:
    """Whether the ``ray`` package can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


class RayConfig(Settings):
    """Where and how a run uses a Ray cluster (the ``ray:`` section of a YAML file)."""

    address: str = Field(
        "local", description="local: start a cluster in this process (explicit num_cpus, "
        "object store, no dashboard); auto: the cluster `ray start` runs on this machine; "
        "else an address (HOST:6379, or ray://HOST:10001 for Ray Client).")
    workers: int = Field(2, ge=1, description="Search actors, each with its own policy.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs reserved per actor "
                                   "(fractions share a GPU).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per actor; an "
                                   "HF policy on a CPU runs that many torch threads.")
    num_cpus: int | None = Field(None, ge=1, description="A local cluster's CPUs (default: "
                                 "workers × cpus_per_worker).")
    object_store_mb: int = Field(256, ge=80, description="A local cluster's object store "
                                 "(trees are small; Ray's default takes 30 % of memory).")
    chunk: int | None = Field(None, ge=1, description="Tasks per call to an actor (its trees "
                              "in flight; lost and regrown if it dies). Default: "
                              "max_trees_in_flight, or fewer so every actor gets work.")
    max_replacements: int | None = Field(None, ge=0, description="Actors started to replace "
                                         "dead ones before the run gives up (default: "
                                         "workers).")
    shared_policy: bool = Field(
        False, description="One policy actor (gpus_per_worker GPUs of its own) serves every "
        "worker's policy calls, rollouts included, instead of a copy per worker.")
    shared_critics: list[str] = Field(
        default_factory=list, description="Critic specs of the run with a model of their own "
        "(e.g. judge=DIR, reward-model=DIR) served by one actor each (gpus_per_worker GPUs) "
        "instead of a copy per worker.")

    @field_validator("address")
    @classmethod
    def _address_given(cls, address: str) -> str:
        if not address.strip():
            raise ValueError("address is empty; use local, auto or HOST:PORT")
        return address.strip()


def __getattr__(name: str):  # the runners load ray: import them only when asked for
    if name in ("run_ray_search", "WorkerPool", "start_ray"):
        from . import ray_search

        return getattr(ray_search, name)
    raise AttributeError(name)


__all__ = ["RAY_MISSING", "RayConfig", "WorkerPool", "ray_available", "run_ray_search",
           "start_ray"]
