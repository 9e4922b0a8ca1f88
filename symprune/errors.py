"""The one exception every layer raises for bad input."""


class ConfigError(ValueError):
    """A bad configuration value or input file, reported before expensive work starts.

    The message names the bad value and the allowed ones; the command prints it
    without a traceback and exits with status 2.
    """
