"""Errors a user can cause. The CLI prints their message as one line and exits, no traceback."""


class ByolError(Exception):
    """A problem with the user's input: the message names the cause and the fix."""


class ConfigError(ByolError):
    """An unknown config key, a value of the wrong type or out of range, an unknown preset."""


class CheckpointError(ByolError):
    """A checkpoint that is missing, corrupt, untrusted, or of another run's shape."""


class TrainingDiverged(ByolError):
    """The loss became NaN or infinite."""


class RunInterrupted(ByolError):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can be resumed."""


class DatasetNotFoundError(ByolError, FileNotFoundError):
    """A dataset that is not where it was looked for; the message names the places and the fix."""


class DatasetError(ByolError, ValueError):
    """A dataset that exists but cannot be used (no images, wrong checksum, bad file format)."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` as the user should see it.

    An error raised in a DataLoader worker reaches the main process re-wrapped, its message being
    the worker's whole traceback; the last line of that traceback is the original message.
    """
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    # A file name may hold a line break (legal on POSIX): written escaped, the message stays one
    # line, and the name stays recognisable.
    return text.replace("\r", "\\r").replace("\n", "\\n")
