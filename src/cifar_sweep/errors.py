"""The errors a user sees as one line, and `exit_on_user_error`, which turns them into
`error: ...` and exit 2 (the entry scripts and the sweep's start use it)."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserInputError(Exception):
    """Bad configuration or data location: reported as one line, before any training starts."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is marked FAILED."""


class Yielded(Exception):
    """Another live run of the same config and code was created first: this one stands aside."""

    def __init__(self, winner):
        super().__init__(f"run {winner.info.run_id} trains this config")
        self.winner = winner


class Pruned(Exception):
    """A search's pruner stopped this trial early: not a failure. Its run ends KILLED, tagged."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
