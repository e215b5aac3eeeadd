"""The exceptions users see as one line naming the problem and the fix, and the exit status of each.

The rule for the command line's exit status:
- 2, a usage error: the command cannot run as given. Bad arguments (argparse), and every
  `MaskGANError` but `RunFailure`: a config key or value, a corpus, a checkpoint or option named on the
  command line, a run_dir whose checkpoints do not fit the config. Change the command and run it again.
- 1, a runtime failure: the command started from good input and failed on the way. `RunFailure`
  (training diverged, the run's own checkpoints became unreadable) as one line; anything else
  (a Ray failure, a bug) with its traceback, as Python exits.
"""


class MaskGANError(Exception):
    """A problem the user can fix; the message names it and the fix. Exit status 2 (a usage error)."""

    exit_status = 2


class ConfigError(MaskGANError):
    """An unknown config key, a value of the wrong type, or a value out of range."""


class DataError(MaskGANError):
    """An empty, binary or too-short corpus, or a dataset that does not match what it is used with."""


class CheckpointError(MaskGANError):
    """A missing, corrupt, untrusted or mismatched checkpoint."""


class RunFailure(MaskGANError):
    """A run that started from good input failed on the way. Exit status 1 (a runtime failure)."""

    exit_status = 1
