"""Tree search sharded over Ray actors; the driver writes the one ``trees.jsonl``.

:func:`run_ray_search` is :func:`~mcts_agent.search.run.run_search` with the trees grown by a
:class:`WorkerPool`: the same run folder, settings check, summary and resume. A worker that
dies loses only the trees it had in flight; they go back to the queue and another worker (a
replacement is started) grows them again, with the same seeds, so the trees do not change.
"""

from __future__ import annotations

import collections
import importlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contracts import Assessment, CriticInput, Environment, Task, load_tasks
from ..errors import UserError
from ..llm.base import Candidate, GenerationRequest
from ..llm.load import BackendConfig, load_policy
from ..registry import PluginSpec, environments
from ..search.config import SearchConfig
from ..search.critic_specs import CriticContext, build_critic, build_spec, describe_critic
from ..search.discriminator import build_discriminator
from ..search.driver import TreeSearch, _already_done
from ..search.run import RunSummary, claim_run_folder, conclude_run, settings_record
from ..trees import ResultFile, TreeRecord
from . import RAY_MISSING, RayConfig, ray_available

log = logging.getLogger(__name__)

Report = Callable[[str], Any]


def _ray() -> Any:
    if not ray_available():
        raise UserError(RAY_MISSING)
    import ray

    return ray


# --------------------------------------------------------------------------- the cluster


def start_ray(config: RayConfig) -> float:
    """Connect to the cluster ``config.address`` names (``local``: start one here with explicit
    CPUs, a small object store and no dashboard); nothing if Ray is already initialised in
    this process. Returns the seconds it took."""
    ray = _ray()
    started = time.perf_counter()
    if ray.is_initialized():
        return 0.0
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    try:
        if config.address == "local":
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # private to this process
            cpus = config.num_cpus or max(1, math.ceil(config.workers * config.cpus_per_worker))
            ray.init(num_cpus=cpus, object_store_memory=config.object_store_mb * 2**20,
                     include_dashboard=False, **quiet)
        else:
            check_reachable(config.address)
            ray.init(address=config.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot reach the Ray cluster at {config.address!r}: "
                        f"{' '.join(str(err).split())[:200]}; start it with `ray start --head` "
                        "or use --ray local") from err
    return time.perf_counter() - started


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a HOST:PORT nothing listens on (Ray itself waits minutes for it)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"nothing answers at {address} ({err.strerror or err}): start the "
                        "cluster there with `ray start --head`, check the address (`ray "
                        "status` on the head prints it), or use --ray local") from err


# --------------------------------------------------------------------------- a worker


@dataclass(frozen=True)
class WorkerJob:
    """What every worker builds: the environment, the policy, the critic and the search."""

    env: PluginSpec
    model: str | None = None
    backend: BackendConfig = field(default_factory=BackendConfig)
    device: str | None = None
    critic: tuple[str, ...] = ("rollout",)
    rollouts: int = 4
    config: SearchConfig = field(default_factory=SearchConfig)
    threads: int | None = None


class SearchWorker:
    """One actor's share of the run: its own environment, policy, critic and tree search.

    ``policy_server`` (a :class:`PolicyServer` actor handle) replaces the worker's own model by
    calls to a shared one; ``critic_servers`` (:class:`CriticServer` handles by spec) replace
    the worker's own copies of those critics."""

    def __init__(self, job: WorkerJob, policy_server: Any = None,
                 critic_servers: dict[str, Any] | None = None) -> None:
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        self.job = job
        self.server = policy_server
        self.shared = {spec: RemoteCritic(h) for spec, h in (critic_servers or {}).items()}
        self.env = environments.create(job.env.name, **(job.env.args or {}))
        self.policy: Any = None
        self.configure(job.model, job.config)

    def configure(self, model: str | None, config: SearchConfig) -> None:
        """Search with ``model`` (loaded if it changed: the next round of ``iterate``) and
        ``config`` (a round's seed) from now on."""
        job = self.job
        if self.policy is not None and model != job.model and hasattr(self.policy, "reload"):
            self.policy.reload(model)  # vLLM: the same engine, new weights
        elif self.policy is None or model != job.model:
            self.policy = None
            self.policy = (RemotePolicy(self.server) if self.server is not None else
                           load_policy(model, backend=job.backend, device=job.device))
        self.job = job = WorkerJob(job.env, model, job.backend, job.device, job.critic,
                                   job.rollouts, config, job.threads)
        self.critic = build_critic(list(job.critic), self.policy, config, job.rollouts,
                                   shared=self.shared)
        discriminator = build_discriminator(config.discriminator, self.policy, seed=config.seed)
        self.search_ = TreeSearch(self.env, self.policy, self.critic, config, discriminator)

    def pid(self) -> int:
        return os.getpid()

    def cpu_seconds(self) -> float:
        """CPU time this worker's process has used (benchmarks: did it get its cores?)."""
        return time.process_time()

    def describe(self) -> dict[str, Any]:
        """The policy and critic, as the run folder's settings record them."""
        return {"policy": self.policy.name, "critic": describe_critic(self.critic)}

    def search(self, tasks: list[Task]) -> Iterator[TreeRecord]:
        """Grow ``tasks``' trees; yield each as it finishes."""
        yield from self.search_.run(tasks)

    def propose(self, requests: list[GenerationRequest]) -> list[list[Candidate]]:
        """This worker's policy answering ``requests`` (evaluation, baselines)."""
        return self.policy.propose(requests)


class PolicyServer:
    """One policy shared by every worker (a Ray actor; calls from several workers at once are
    batched by the backend where it merges concurrent calls)."""

    def __init__(self, model: str | None, backend: BackendConfig, device: str | None) -> None:
        self.backend, self.device = backend, device
        self.policy = load_policy(model, backend=backend, device=device)

    def name(self) -> str:
        return self.policy.name

    def load(self, model: str | None) -> None:
        """Serve ``model`` from now on (``iterate``: the round's trained weights)."""
        if hasattr(self.policy, "reload"):
            self.policy.reload(model)
        else:
            self.policy = None
            self.policy = load_policy(model, backend=self.backend, device=self.device)

    def propose(self, requests: list[GenerationRequest]) -> list[list[Candidate]]:
        return self.policy.propose(requests)


class CriticServer:
    """One critic with a model of its own (``judge=DIR``, ``reward-model=DIR``) shared by every
    worker (a Ray actor), instead of a copy per worker."""

    def __init__(self, spec: str, config: SearchConfig, rollouts: int) -> None:
        self.spec, self.rollouts = spec, rollouts
        self.configure(config)

    def configure(self, config: SearchConfig) -> None:
        """Build the critic for ``config`` (``iterate``: a round's seed); the same config keeps
        the critic (and its cache)."""
        if getattr(self, "config", None) != config:
            self.config = config
            self.critic = build_spec(self.spec, CriticContext.of(None, config, self.rollouts))

    def describe(self) -> dict[str, Any]:
        return describe_critic(self.critic)

    def evaluate(self, nodes: list[CriticInput]) -> list[Assessment]:
        return self.critic.evaluate(nodes)


class RemoteCritic:
    """A critic whose calls go to a :class:`CriticServer`; described (in the run's settings)
    as the critic it calls, so a run's settings do not depend on where its critics live."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.description = _ray().get(server.describe.remote())
        self.name = self.description["name"]

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        return _ray().get(self.server.evaluate.remote(list(nodes)))


class RemotePolicy:
    """A :class:`~mcts_agent.llm.base.Policy` whose calls go to a :class:`PolicyServer`."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.name = _ray().get(server.name.remote())

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        return _ray().get(self.server.propose.remote(list(requests)))


# --------------------------------------------------------------------------- the pool


@dataclass
class _Worker:
    number: int
    actor: Any
    pid: int
    chunk: list[Task] = field(default_factory=list)  # its tasks not yet returned


class WorkerPool:
    """``config.workers`` :class:`SearchWorker` actors; dead ones are replaced, their trees in
    flight regrown elsewhere. ``report`` gets one line per event worth telling the user."""

    def __init__(self, job: WorkerJob, config: RayConfig,
                 report: Report = log.warning) -> None:
        self.ray = _ray()
        self.job, self.config, self.report = job, config, report
        self.start_seconds = start_ray(config)
        self.replacements_left = (config.workers if config.max_replacements is None
                                  else config.max_replacements)
        self.deaths = 0
        self._numbers = iter(range(1, 1 << 30))
        self._check_resources()
        self.server = None
        self._served = job.model
        if config.shared_policy:
            self.server = self.ray.remote(PolicyServer).options(
                num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
                max_concurrency=64).remote(job.model, job.backend, job.device)
        self.critic_servers = self._critic_servers()
        started = time.perf_counter()
        self.workers = self._start(config.workers)
        self.actor_start_seconds = time.perf_counter() - started

    def _check_resources(self) -> None:
        """Refuse at once a pool the whole cluster cannot hold (Ray would wait for it forever;
        a pool that only waits for busy resources to free up is let through)."""
        cfg = self.config
        servers = (1 if cfg.shared_policy else 0) + len(cfg.shared_critics)
        need = {"CPU": (cfg.workers + servers) * cfg.cpus_per_worker,
                "GPU": (servers + (0 if cfg.shared_policy else cfg.workers))
                * cfg.gpus_per_worker}
        have = self.ray.cluster_resources()
        short = [f"{need[k]:g} {k}s (it has {have.get(k, 0):g})" for k in need
                 if need[k] > have.get(k, 0) + 1e-9]
        if short:
            raise UserError(f"the Ray cluster cannot hold {cfg.workers} workers: they need "
                            f"{' and '.join(short)}; lower --workers, --gpus-per-worker or "
                            "cpus_per_worker, or add nodes (`ray status` lists them)")

    def _critic_servers(self) -> dict[str, Any]:
        """One :class:`CriticServer` per ``shared_critics`` spec (each one of the run's
        critics), started and checked before the workers that call them."""
        cfg = self.config
        if unknown := [s for s in cfg.shared_critics if s not in self.job.critic]:
            raise UserError(f"shared_critics {unknown} are not among the run's critics "
                            f"{list(self.job.critic)}; name them exactly as --critic does")
        servers = {spec: self.ray.remote(CriticServer).options(
            num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
            max_concurrency=64).remote(spec, self.job.config, self.job.rollouts)
            for spec in cfg.shared_critics}
        try:
            self.ray.get([server.describe.remote() for server in servers.values()])
        except self.ray.exceptions.RayActorError as err:
            raise _start_failure(err) from err
        return servers

    def _start(self, count: int = 1) -> list[_Worker]:
        """Start ``count`` workers at once (their models load in parallel)."""
        cfg = self.config
        gpus = 0 if cfg.shared_policy else cfg.gpus_per_worker
        actors = [self.ray.remote(SearchWorker).options(
            num_cpus=cfg.cpus_per_worker, num_gpus=gpus).remote(self.job, self.server,
                                                                self.critic_servers)
            for _ in range(count)]
        try:
            pids = self.ray.get([actor.pid.remote() for actor in actors])
        except self.ray.exceptions.RayActorError as err:
            raise _start_failure(err) from err
        return [_Worker(next(self._numbers), a, p) for a, p in zip(actors, pids, strict=True)]

    # ------------------------------------------------------------------ public

    def pids(self) -> list[int]:
        """Process ids of the live workers (in worker order)."""
        return [w.pid for w in self.workers]

    def describe(self) -> dict[str, Any]:
        """The policy's name and the critic's description, as a worker built them."""
        return self.ray.get(self.workers[0].actor.describe.remote())

    def configure(self, model: str | None, config: SearchConfig) -> None:
        """Every worker searches with ``model`` and ``config`` from now on."""
        self.job = WorkerJob(self.job.env, model, self.job.backend, self.job.device,
                             self.job.critic, self.job.rollouts, config, self.job.threads)
        if self.server is not None and model != self._served:
            self.ray.get(self.server.load.remote(model))
            self._served = model
        self.ray.get([server.configure.remote(config) for server in self.critic_servers.values()])
        self.ray.get([w.actor.configure.remote(model, config) for w in self.workers])

    def search(self, tasks: Sequence[Task]) -> Iterator[TreeRecord]:
        """Every task's tree, grown on the workers, yielded as each arrives (any order)."""
        chunks = collections.deque(_chunks(list(tasks), self._chunk_size(len(tasks))))
        events: queue.Queue = queue.Queue()
        idle = list(self.workers)
        busy: dict[int, _Worker] = {}
        while chunks or busy:
            while chunks and idle:
                worker = idle.pop(0)
                worker.chunk = chunks.popleft()
                busy[worker.number] = worker
                threading.Thread(target=self._stream, args=(worker, events),
                                 daemon=True).start()
            kind, worker, payload = events.get()
            if kind == "tree":
                worker.chunk = [t for t in worker.chunk if t.id != payload.task.id]
                yield payload
            elif kind == "done":
                idle.append(busy.pop(worker.number))
            elif kind == "died":
                busy.pop(worker.number)
                if worker.chunk:
                    chunks.appendleft(worker.chunk)
                idle.append(self._replace(worker, payload))
            else:  # an error inside the search (the user's or a plug-in's), not Ray's
                raise payload

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """``requests`` answered by the workers' policies, split evenly among them (seeds are
        per request, so the answers do not depend on the split)."""
        requests = list(requests)
        parts = _chunks(requests, max(1, math.ceil(len(requests) / len(self.workers))))
        answers: list[list[list[Candidate]]] = [[] for _ in parts]
        pending = dict(enumerate(parts))
        while pending:
            calls = {i: (w, w.actor.propose.remote(pending[i]))
                     for i, w in zip(list(pending), self._cycle(len(pending)), strict=False)}
            for i, (worker, ref) in calls.items():
                try:
                    answers[i] = self.ray.get(ref)
                    del pending[i]
                except self.ray.exceptions.RayActorError as err:
                    if worker in self.workers:
                        self._replace(worker, err)
        return [candidates for part in answers for candidates in part]

    def close(self) -> None:
        """Stop every actor of this pool."""
        for worker in self.workers:
            self.ray.kill(worker.actor)
        if self.server is not None:
            self.ray.kill(self.server)
        self.workers = []

    # ------------------------------------------------------------------ internals

    def _cycle(self, n: int) -> list[_Worker]:
        return [self.workers[i % len(self.workers)] for i in range(n)]

    def _chunk_size(self, tasks: int) -> int:
        if self.config.chunk is not None:
            return self.config.chunk
        per_worker = math.ceil(tasks / len(self.workers)) if tasks else 1
        return max(1, min(self.job.config.max_trees_in_flight, per_worker))

    def _stream(self, worker: _Worker, events: queue.Queue) -> None:
        """Read one chunk's trees from ``worker`` into ``events`` (a thread per busy worker)."""
        ray = self.ray
        try:
            for ref in worker.actor.search.remote(list(worker.chunk)):
                events.put(("tree", worker, ray.get(ref)))
        except ray.exceptions.RayActorError as err:
            events.put(("died", worker, err))
            return
        except Exception as err:  # re-raised in the driver's thread
            events.put(("error", worker, _unwrap(err)))
            return
        events.put(("done", worker, None))

    def _replace(self, dead: _Worker, err: BaseException) -> _Worker:
        """Start a worker in place of ``dead`` (one line to the user); refused once the run has
        replaced ``max_replacements`` workers."""
        self.deaths += 1
        lost = len(dead.chunk)
        if self.replacements_left <= 0:
            raise UserError(f"search worker {dead.number} (pid {dead.pid}) died ({_cause(err)})"
                            f" and {self.deaths - 1} were replaced before; giving up (finished "
                            "trees are saved: the same command resumes)")
        self.replacements_left -= 1
        self.workers.remove(dead)
        fresh, = self._start()
        self.workers.append(fresh)
        self.report(f"search worker {dead.number} (pid {dead.pid}) died ({_cause(err)}); its "
                    f"{lost} trees in flight are grown again; worker {fresh.number} "
                    f"(pid {fresh.pid}) replaces it")
        return fresh


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _cause(err: BaseException) -> str:
    text = " ".join(str(err).split())
    for marker in ("killed", "out of memory", "OOM", "SIGKILL", "exited", "unexpectedly"):
        if marker.lower() in text.lower():
            return {"unexpectedly": "its process exited unexpectedly"}.get(marker, marker)
    return text[:120] or type(err).__name__


def _start_failure(err: BaseException) -> Exception:
    """The error a worker raised while starting (a model folder missing on its node, a
    plug-in failing to build), read from the last line of Ray's report: a UserError when the
    worker's exception is one the command line reports as the user's to fix."""
    lines = [line.strip() for line in str(getattr(err, "error_msg", err)).splitlines()]
    last = next((line for line in reversed(lines) if line), type(err).__name__)
    qualified, _, text = last.partition(": ")
    message = f"a search worker failed to start: {text or last}"
    module, _, name = qualified.rpartition(".")
    try:
        kind = getattr(importlib.import_module(module), name) if module else None
    except ImportError:
        kind = None
    if isinstance(kind, type) and issubclass(kind, (UserError, ValueError, OSError,
                                                    ImportError)):
        return UserError(message)
    return RuntimeError(f"{message} ({qualified})")


def _unwrap(err: Exception) -> Exception:
    """A worker's own exception (a UserError, a plug-in's bug) rather than Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else err


# --------------------------------------------------------------------------- a whole run


class PoolPolicy:
    """The workers' policies as one :class:`~mcts_agent.llm.base.Policy` (evaluation and the
    baselines run on the cluster through it)."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self.pool, self.name = pool, name

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        return self.pool.propose(requests)


def run_ray_search(
    env: str | PluginSpec,
    *,
    ray: RayConfig | None = None,
    tasks: list[Task] | int = 20,
    split: str = "test",
    model: str | Path | None = None,
    backend: BackendConfig | None = None,
    device: str | None = None,
    config: SearchConfig | None = None,
    critic: Sequence[str] = ("rollout",),
    rollouts: int = 4,
    out_dir: str | Path | None = None,
    baselines: bool = True,
    on_result: Callable[[TreeRecord], Any] | None = None,
    allow_changed: bool = False,
    pool: WorkerPool | None = None,
    report: Report = log.warning,
) -> tuple[RunSummary, list[TreeRecord]]:
    """:func:`~mcts_agent.search.run.run_search` on a Ray cluster.

    The environment is named (``env``, or a :class:`PluginSpec` with arguments) and the critic
    given as specs (``critic``, as ``--critic`` takes them): each worker builds its own. A
    ``pool`` passed in is reused (and left running; ``iterate`` keeps one for all rounds),
    else one is started and stopped here. The run folder, its settings check, resume and
    summary are the single-process run's; the trees are the same trees."""
    config = config or SearchConfig()
    spec = env if isinstance(env, PluginSpec) else PluginSpec(env, {})
    environment = environments.create(spec.name, **(spec.args or {}))
    if isinstance(tasks, int):
        tasks = load_tasks(environment, tasks, split=split)
    own = pool is None
    if pool is not None and pool.job.config != config:
        pool.configure(pool.job.model, config)
    if pool is None:
        job = WorkerJob(spec, str(model) if model is not None else None,
                        backend or BackendConfig(), device, tuple(critic), rollouts, config,
                        _threads(ray or RayConfig()))
        pool = WorkerPool(job, ray or RayConfig(), report)
    try:
        described = pool.describe()
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            claim_run_folder(Path(out_dir), settings_record(spec, described, config, split),
                             len(tasks), allow_changed)
        return _run(environment, tasks, pool, described["policy"], config, out_dir, baselines,
                    on_result)
    finally:
        if own:
            pool.close()


def _run(environment: Environment, tasks: list[Task], pool: WorkerPool, policy_name: str,
         config: SearchConfig, out_dir: str | Path | None, baselines: bool,
         on_result: Callable[[TreeRecord], Any] | None) -> tuple[RunSummary, list[TreeRecord]]:
    results_file = ResultFile(Path(out_dir) / "trees.jsonl") if out_dir is not None else None
    started = time.perf_counter()
    done = results_file.done() if results_file is not None else {}
    pending = [task for task in tasks if not _already_done(task, done)]
    fresh = []
    for record in pool.search(pending):
        if results_file is not None:
            results_file.append(record)
        if on_result is not None:
            on_result(record)
        fresh.append(record)
    return conclude_run(environment, PoolPolicy(pool, policy_name), config, tasks, fresh,
                        results_file, baselines, time.perf_counter() - started, out_dir)


def _threads(config: RayConfig) -> int | None:
    """torch threads of a worker on CPUs: its reserved CPUs (at least one)."""
    return None if config.gpus_per_worker else max(1, int(config.cpus_per_worker))
