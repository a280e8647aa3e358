"""The toolkit's error types: mistakes a user can fix, told in one line (what, where, how).

The CLI prints a :class:`UserError` as one line and exits non-zero; any other exception is a
bug in the toolkit or a plug-in and is reported as one (traceback under ``-v``).
Pure Python: importing it costs nothing.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a bad setting, file, folder or plug-in. The message says
    what was wrong, where, and what to do."""


class ConfigError(UserError, ValueError):
    """A setting that cannot be used (a CLI option, a YAML key, a spec)."""


class PluginError(UserError, TypeError):
    """A plug-in (environment, critic, policy) that breaks its declared contract; the message
    names the plug-in and the missing or wrong piece."""


class RunMismatchError(UserError):
    """Resuming into a run folder made with other settings or other tasks."""


class RecordError(ValueError):
    """A stored record (a line of ``trees.jsonl``) that is not a valid record."""


class ModelLoadError(UserError):
    """A model folder or device that cannot be loaded."""


def validation_problems(err: Exception) -> str:
    """A pydantic ``ValidationError`` as one line: ``field: problem; …``."""
    problems = []
    for item in err.errors():  # type: ignore[attr-defined]
        where = ".".join(map(str, item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
