class UserInputError(Exception):
    """Bad configuration or data location: reported as one line, before any training starts."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is marked FAILED."""
