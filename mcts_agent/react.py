"""ReAct turns for text agents: what the model is told, and how an action is read back.

The reply format belongs to the policy side (core): environments parse replies with it, and
splicing and training write replies in it, without either depending on the other.

A turn is ``Thought: <reasoning> Action: <command>`` on one line (the thought is optional, so a
bare ``Action: go east`` or even ``go east`` is accepted). Parsing is lenient about the things
models do — markdown, quotes, a trailing full stop, ``Action 1:``, a different case — and strict
about the one thing that matters: with a list of valid actions, the command must be one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_INSTRUCTIONS = (
    "You are an agent in a text environment. Each turn, reply on ONE line as\n"
    "Thought: <your brief reasoning> Action: <one command>\n"
    "Use one of the valid actions when they are listed."
)

_ACTION = re.compile(r"\bact(?:ion)?\s*\d*\s*[:=]\s*(?P<action>.+)", re.IGNORECASE)
_WRAPPERS = "`\"'*[]<>"


@dataclass(frozen=True)
class ParsedAction:
    """What a reply asked for: ``action`` (None when nothing usable was found) and, when it is
    rejected, ``error`` — the message the agent is shown instead of an observation."""

    action: str | None
    error: str | None = None


def normalise(command: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: the form commands are compared in."""
    return " ".join(command.strip().strip(_WRAPPERS).rstrip(".!").strip(_WRAPPERS).lower().split())


def parse_action(reply: str, valid_actions: tuple[str, ...] | None = None) -> ParsedAction:
    """Read the command out of a model's reply.

    The text after the last ``Action:`` (any case, ``Act:`` and ``Action 1:`` too) up to the end
    of its line; without such a label, a one-line reply is taken as the command itself. With
    ``valid_actions``, the command must match one of them after :func:`normalise`; the valid
    spelling is returned.
    """
    text = reply.strip()
    matches = list(_ACTION.finditer(text))
    if matches:
        command = matches[-1].group("action").splitlines()[0]
    elif text and "\n" not in text and not text.lower().startswith("thought"):
        command = text
    else:
        return ParsedAction(None, 'No action found. End your reply with "Action: <command>".')
    command = normalise(command)
    if not command:
        return ParsedAction(None, 'The action was empty. End your reply with "Action: <command>".')
    if valid_actions is None:
        return ParsedAction(command)
    by_form = {normalise(a): a for a in valid_actions}
    if command in by_form:
        return ParsedAction(by_form[command])
    return ParsedAction(None, f'"{command}" is not a valid action here.')


def render_turn(action: str, thought: str | None = None) -> str:
    """A reply in the format :func:`parse_action` reads (used for demonstrations and splices)."""
    return f"Thought: {thought} Action: {action}" if thought else f"Action: {action}"
