"""The plugin's errors, each carrying the one line a user sees, and that one-line formatting.

The bottom layer: every other module may import it, it imports none of them.
"""
import json
from collections.abc import Callable


class InputError(ValueError):
    """Bad input from a rule or a command line: the message is shown to the user as is."""


class ModelUnavailable(Exception):
    """The function's model failed to load (or is held); the message says why in one line."""


class ModelFailed(ModelUnavailable):
    """A model could not be loaded (as opposed to one still loading): the message says why."""


class ConfigError(ValueError):
    """A bad configuration value or key: the message names the key, the rule and where it came from."""


def first_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


ECHO_CHARS = 200  # the most of a caller's value an answer or a log line repeats


def shown(value: object, encode: Callable[[object], str] = repr, limit: int = ECHO_CHARS) -> str:
    """A caller's value as an answer or a log line may repeat it: encoded (repr or json.dumps, so
    CR/LF come out escaped and cannot start a forged line), and cut to about `limit` characters
    with its full length said, so a 27 MB value costs 200 bytes and no 27 MB copy."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{encode(value[:limit])}... ({len(value)} characters)"
    if encode is json.dumps and isinstance(value, (list, dict)):
        # Encoded lazily, only as far as shown: json.dumps of a k of 10 million numbers took
        # 0.95 s and 58 MB to show 200 characters of them.
        text = ""
        for chunk in json.JSONEncoder().iterencode(value):
            text += chunk
            if len(text) > limit:
                kind = "an array" if isinstance(value, list) else "an object"
                return f"{text[:limit]}... ({kind} of {len(value)} items)"
        return text
    text = encode(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
