"""Errors that the CLI reports as a clean message with exit code 2 (no traceback).

Set ``MTL_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) to see the Python traceback as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in a config or data: where, what was given, what is allowed, the fix."""

    key: str
    message: str
    value: object = None
    allowed: str | None = None
    fix: str | None = None

    def render(self) -> str:
        text = f"{self.key}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.allowed:
            text += f"\n      allowed: {self.allowed}"
        if self.fix:
            text += f"\n      fix: {self.fix}"
        return text


#: how torch re-raises an exception of a DataLoader worker process in the main process
_WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class UserError(Exception):
    """Base for errors caused by the user's config or data; exit code 2."""

    exit_code = 2
    title = "Error"

    def __init__(self, problems: list[Problem] | str):
        self._verbatim: str | None = None
        if isinstance(problems, str):
            problems = self._from_worker(problems)
            problems = [Problem(key="", message=problems)]
        seen: set = set()  # the same problem found by two checks is reported once
        self.problems = []
        for q in problems:
            ident = (q.key, q.message, repr(q.value), q.allowed, q.fix)
            if ident not in seen:
                seen.add(ident)
                self.problems.append(q)
        super().__init__(self.render())

    def _from_worker(self, text: str) -> str:
        """A DataLoader worker's error comes back as torch makes it: ``type(e)(text)`` where the
        text is the worker's traceback, ending with ``module.Class: <e's message>``. That message,
        as the worker rendered it, is what the user sees (verbatim)."""
        if not _WORKER_ERROR.match(text):
            return text
        marker = f"\n{type(self).__module__}.{type(self).__qualname__}: "
        at = text.rfind(marker)
        if at < 0:
            return text
        self._verbatim = text[at + len(marker) :].rstrip("\n")
        return self._verbatim

    def render(self) -> str:
        if self._verbatim is not None:
            return self._verbatim
        n = len(self.problems)
        head = f"{self.title}: {n} problem{'s' if n != 1 else ''} found"
        lines = [head]
        for p in self.problems:
            lines.append("  - " + p.render().lstrip(": "))
        return "\n".join(lines)


class ConfigError(UserError):
    title = "Config error"


class DataError(UserError):
    title = "Data error"


class TrainingError(UserError):
    """A run that cannot go on (e.g. non-finite losses past the configured limit); exit code 1."""

    exit_code = 1
    title = "Training stopped"


class RunInterrupted(Exception):
    """SIGTERM or SIGINT: the current step finished and a checkpoint was written; exit code 3.

    ``mtl-train ... resume=auto`` (same run_dir) continues the run from that checkpoint.
    """

    exit_code = 3

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(f"{signal_name}: stopped after step {step}; checkpoint written to {checkpoint}")
