"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class KdscopeError(Exception):
    """A problem with the user's input (config, files, models, data) rather than a bug in kdscope."""


class ConfigError(KdscopeError):
    """A study configuration is invalid."""


class TrainingDiverged(KdscopeError):
    """A loss became NaN or infinite during training."""
