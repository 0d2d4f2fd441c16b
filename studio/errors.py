"""User-facing errors: one clear line, printed by the CLI without a traceback (unless --debug)."""


class StudioError(ValueError):
    """An error caused by the user's input or environment, with a message that says what to do."""


class MissingFileError(StudioError):
    """A required file (weights, body model) is not where it should be."""
