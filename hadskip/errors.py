"""Errors the user can fix. The CLI prints them as one line, without a traceback."""


class HadSkipError(Exception):
    """Base class: a problem with the user's input, data, settings or files."""


class ConfigError(HadSkipError, ValueError):
    """A setting, flag or budget that is not accepted."""


class DataError(HadSkipError):
    """A task's data is missing or malformed."""


class CheckpointError(HadSkipError):
    """A checkpoint is missing, incomplete or corrupted."""


class OutputExistsError(HadSkipError):
    """The output location already holds results and --overwrite was not given."""
