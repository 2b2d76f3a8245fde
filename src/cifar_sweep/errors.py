"""The errors a user sees as one line, and the one place that turns them into `error: ...`, exit 2."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserInputError(Exception):
    """Bad configuration or data location: reported as one line, before any training starts."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is marked FAILED."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
