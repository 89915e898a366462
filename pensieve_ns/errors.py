"""The one error type for bad user input, and how commands report it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, Optional, Union


class PensieveInputError(Exception):
    """Bad user input: a message that names the file and the problem, meant to be printed as one line."""

    def __init__(self, path: Optional[Union[str, Path]], problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class DataWarning(UserWarning):
    """Something in the user's data was skipped, converted or repaired; the run goes on."""


def exit_with_error(error: BaseException, prog: str = "pensieve-ns") -> NoReturn:
    """Print ``prog: error: <message>`` on stderr and exit with status 2 (the usage-error status)."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    raise SystemExit(2)
