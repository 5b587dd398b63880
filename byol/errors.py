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
