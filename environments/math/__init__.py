"""Math reasoning environments: step-by-step problems with verifiable answers."""

from environments.math.arith import (
    STEP_DELIMITER,
    ArithConfig,
    ArithProblem,
    check_step,
    generate,
    is_correct,
    iter_problems,
    parse_answer,
    render_prompt,
    render_solution,
    solve,
    split_of,
)

__all__ = [
    "STEP_DELIMITER",
    "ArithConfig",
    "ArithProblem",
    "check_step",
    "generate",
    "is_correct",
    "iter_problems",
    "parse_answer",
    "render_prompt",
    "render_solution",
    "solve",
    "split_of",
]
