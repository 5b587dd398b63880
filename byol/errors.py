"""Errors a user can cause. The CLI prints their message as one line and exits, no traceback."""

import re


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


class OutOfMemory(ByolError):
    """A run needs more memory than the machine has: the message names the setting to lower."""


_REQUESTED = re.compile(r"allocate ([0-9.]+) ?(bytes|[kmgtp]i?b)")


def allocation_failure(error: BaseException) -> str | None:
    """What an allocation that failed asked for ("960.0 GB", or "" when ``error`` does not say),
    or None when ``error`` is not an allocation failure: torch's CPU allocator and CUDA's raise
    RuntimeErrors (OutOfMemoryError on CUDA), Python a MemoryError."""
    text = str(error).lower()
    if isinstance(error, MemoryError):
        return ""
    if not isinstance(error, RuntimeError):
        return None
    # oneDNN (CPU convolutions) reports a failed allocation as a primitive it could not create;
    # Python a thread whose stack it could not map as one it cannot start.
    signs = ("out of memory", "can't allocate memory", "create a primitive", "new thread")
    if not any(sign in text for sign in signs):
        return None
    found = _REQUESTED.search(text)
    if not found:
        return ""
    number, unit = float(found.group(1)), found.group(2)
    if unit != "bytes":
        return f"{number:g} {unit[0].upper()}{unit[1:-1]}B"
    return memory_text(number)


def memory_text(size: float) -> str:
    """A count of bytes in words: '512 MB', '1.2 TB'."""
    if size == float("inf"):
        return "more than 9.2 EB (beyond what int64 counts)"  # a size no tensor can have
    units = ("bytes", "KB", "MB", "GB", "TB", "PB", "EB")
    step = 0
    while size >= 1000 and step < len(units) - 1:
        size, step = size / 1000, step + 1
    return f"{size:.0f} {units[step]}" if step < 3 else f"{size:.3g} {units[step]}"
