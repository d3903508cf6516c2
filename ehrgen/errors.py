"""The one exception type for bad user input: a one-line message naming what and where."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class InputError(ValueError):
    """Bad input (file, row, field or option) detected before anything is written."""


def one_line_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Entry-point decorator (under ``@hydra.main``): an InputError ends the command as one
    ``error: ...`` line and exit status 1, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except InputError as err:
            raise SystemExit(f"error: {err}") from None

    return wrapper
