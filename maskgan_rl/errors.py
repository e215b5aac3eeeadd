"""The one exception type users see: a problem with their input, and how to fix it."""


class MaskGANError(Exception):
    """Bad input (config, corpus, checkpoint, vocabulary...). The message names the problem and the fix.

    The command line prints it as one line and exits with status 2; nothing else is caught there,
    so a genuine bug still shows its traceback.
    """


class ConfigError(MaskGANError):
    """An unknown config key, a value of the wrong type, or a value out of range."""


class DataError(MaskGANError):
    """An empty, binary or too-short corpus, or a dataset that does not match what it is used with."""


class CheckpointError(MaskGANError):
    """A missing, corrupt, untrusted or mismatched checkpoint."""
