"""Errors of our own. Each message names the bad value and what is allowed.

The CLI turns `UsageError` subclasses into exit code 2 and `BuildFailure`
subclasses into exit code 1, always as one line.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # the CLI's exit codes


class DistilforgeError(Exception):
    """Base class: every error the tool raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(DistilforgeError):
    """Bad input from the user: arguments, files, directories. Exit code 2."""

    exit_code = EXIT_USAGE


class CheckpointError(UsageError):
    """The checkpoint directory, its config or its weights cannot be used."""


class UnsupportedTargetError(UsageError):
    """A target name that is not registered."""


class MissingBackendError(UsageError):
    """A target whose optional backend is not installed."""


class OutputDirError(UsageError):
    """The output directory cannot be written safely."""


class DataFileError(UsageError):
    """A calibration or evaluation file that cannot be used."""


class BuildFailure(DistilforgeError):
    """A build step or check failed. Exit code 1."""


class ExportError(BuildFailure):
    """A converter failed to produce an artifact."""


class ValidationError(BuildFailure):
    """An artifact's outputs are outside its tolerances, or its files changed."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message: library errors can run to pages."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
