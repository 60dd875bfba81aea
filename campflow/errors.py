"""The few domain exceptions; each message names the place and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class CampflowError(Exception):
    """Base of the errors shown to users as one clear message (no traceback)."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a file: where it is and what to do."""

    place: str  # "file:line", "file row 12", or a command argument
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}" if self.place else self.message


class ProblemsError(CampflowError):
    """Several problems, all listed at once."""

    def __init__(self, problems: list[Problem], summary: str = "") -> None:
        self.problems = list(problems)
        self.summary = summary
        super().__init__(self.render())

    def render(self) -> str:
        lines = [str(p) for p in self.problems]
        if self.summary:
            lines.append(self.summary)
        return "\n".join(lines)


class SpecError(ProblemsError):
    """A spec (YAML) is wrong; nothing was written."""


class ImportRejected(ProblemsError):
    """A spreadsheet has bad rows; nothing was written."""


class FormulaError(CampflowError):
    """A formula or a field reference does not parse or names something unknown."""

    def __init__(self, code: str, message: str, text: str, start: int, end: int) -> None:
        self.code = code
        self.message = message
        self.text = text
        self.start = start
        self.end = end
        super().__init__(f"{message}\n{self.caret_line()}")

    @property
    def token(self) -> str:
        return self.text[self.start : self.end]

    def caret_line(self) -> str:
        """The text with a caret line under the offending token."""
        width = max(1, self.end - self.start)
        return f"  {self.text}\n  {' ' * self.start}{'^' * width}"


class NotFound(CampflowError):
    """A code given on the command line names nothing."""


def closest(word: str, names: Iterable[str]) -> str:
    """`; did you mean X?` or a short list of what exists."""
    names = sorted(set(names))
    match = difflib.get_close_matches(word, names, n=3, cutoff=0.5)
    if match:
        return f"; did you mean {', '.join(match)}?"
    return f"; known: {', '.join(names[:12])}" if names else "; none is defined yet"
