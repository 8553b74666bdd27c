"""User-facing errors: one line naming what is wrong and how to fix it."""


class KDError(Exception):
    """A mistake in the user's input (config, paths, data). Printed as one line, no traceback."""


class ConfigError(KDError):
    """A config value is missing, unknown, of the wrong type or out of range."""
