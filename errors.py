"""The plugin's errors, each carrying the one line a user sees, and that one-line formatting.

The bottom layer: every other module may import it, it imports none of them.
"""


class InputError(ValueError):
    """Bad input from a rule or a command line: the message is shown to the user as is."""


class ModelUnavailable(Exception):
    """The function's model failed to load (or is held); the message says why in one line."""


class ConfigError(ValueError):
    """A bad configuration value or key: the message names the key, the rule and where it came from."""


def first_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
