"""Errors that reach the user as one line and a non-zero exit status.

Every message says what is wrong and how to fix it; the CLI prints
``error: <message>`` and exits with :attr:`CSKDError.exit_code`.
"""


class CSKDError(Exception):
    """Base of every error the command-line tools report without a traceback."""

    exit_code = 2


class ConfigError(CSKDError):
    """A config field is unknown, misspelled or out of range."""


class DataError(CSKDError):
    """Missing, empty or corrupt data, or labels out of range."""


class ModelError(CSKDError):
    """An unknown model or method name, or incompatible teacher/student."""


class WorkdirError(CSKDError):
    """A workdir that would be overwritten, or that holds no finished run."""


class NonFiniteLossError(CSKDError):
    """Training produced a NaN or Inf loss."""

    exit_code = 3
