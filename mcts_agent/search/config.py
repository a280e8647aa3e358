"""Settings of an LLM tree search (typed; loadable from YAML; overridable from the CLI)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..engine import EngineConfig
from ..settings import Settings


class SearchConfig(Settings):
    """How each task's tree is grown.

    One *simulation* is one leaf expansion: ``expand_n`` candidate steps sampled in one request,
    each stepped in the environment and scored by the critic (revisiting a finished state costs
    no model call and is not counted). A tree stops when it has spent ``simulations``,
    ``max_tokens`` generated tokens or ``max_seconds``; when (``stop_when_solved``) a verified
    solution is found in data mode; or when its search has converged (ten waves in a row in
    which every descent ended on a finished state).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["data", "inference"] = Field(
        "data", description="data: the verifier may use the reference answer (training data); "
        "inference: no reference, the answer is chosen from the tree by its values.")
    simulations: int = Field(32, ge=1, description="Leaf expansions per tree.")
    expand_n: int = Field(4, ge=1, description="Candidate steps sampled per expansion.")
    leaves_per_tree: int = Field(4, ge=1, description="Leaves per tree per wave (virtual loss).")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_step_tokens: int = Field(48, ge=1, description="Token cap of one step.")
    max_depth: int = Field(12, ge=1, description="Steps before an episode is cut (terminal).")
    max_tokens: int | None = Field(None, ge=1, description="Generated-token budget per tree "
                                   "(policy and rollouts together); None = no cap.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-time budget per tree.")
    stop_when_solved: bool = Field(True, description="Data mode: stop a tree at its first "
                                   "verified solution.")
    prior_length_power: float = Field(
        1.0, ge=0, description="Prior of a step = exp(Σ log π / tokens^power) (MCTS-DPO uses "
        "1.25; 0 = raw sequence probability).")
    sibling_feedback: int = Field(
        0, ge=0, description="SWE-Search: when a node is expanded again, its prompt carries the "
        "critic's feedback on up to this many of its children already judged (0 = off).")
    feedback_header: str = Field(
        "Alternatives already tried at this point, and how they were judged:",
        description="First line of the feedback block.")
    feedback_line: str = Field(
        '- "{action}" (value {value:.2f}): {feedback}',
        description="One judged alternative; fields: action, value, feedback.")
    discriminator: str = Field(
        "value", description="Inference mode: what picks the final trajectory among the "
        "finished ones (SWE-Search): value (the most visited) or judge[=MODEL] (an LLM judge "
        "reads each whole trajectory). Under value, environments with answers keep the "
        "visit-weighted vote over answers, and code (visible tests) picks the program passing "
        "most of the tests the prompt shows.")
    max_trees_in_flight: int = Field(64, ge=1, description="Trees searched at once.")
    driver: Literal["auto", "wave", "async"] = Field(
        "auto", description="wave: every tree's round advances together, each model call "
        "batched across all trees (any backend; interactive environments). async: each tree "
        "advances on its own and sends its next call the moment its last one returns; the "
        "backend batches whatever is in flight. auto: async where the policy batches "
        "continuously (vLLM, OpenAI-compatible servers) and the environment is not "
        "interactive, else wave. The trees are the same.")
    cohorts: int = Field(1, ge=1, description="Wave driver's overlap: split the trees in "
                         "flight into this many cohorts grown by as many threads, so one "
                         "cohort's model calls (expansions, rollouts, judge) run while another "
                         "steps its environment or backs up; pays off on backends that batch "
                         "across callers (vLLM, OpenAI-compatible servers). The trees are the "
                         "same. (The async driver overlaps every tree by itself.)")
    seed: int = 0
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(widen_c=1.0, widen_alpha=0.5),
        description="Tree rule; progressive widening is on so a node can gain more sampled "
        "steps as its visits grow (a grafted rollout step starts with a single child). "
        "SWE-Search's selection terms: engine.depth_weight, engine.diversity_weight (the "
        "driver sets each node's novelty among its siblings from the step texts).")

    @model_validator(mode="after")
    def _one_way_to_overlap(self) -> SearchConfig:
        if self.driver == "async" and self.cohorts > 1:
            raise ValueError("cohorts split the wave driver's trees into overlapping groups; "
                             "the async driver already overlaps every tree: drop cohorts")
        return self

    @field_validator("discriminator")
    @classmethod
    def _known_discriminator(cls, spec: str) -> str:
        name, _, arg = spec.partition("=")
        if name not in ("value", "judge") or (name == "value" and arg):
            raise ValueError(f"unknown discriminator {spec!r}; use value, judge or judge=MODEL")
        return spec
