"""Checks and waits around calls to the plugin over nng (tests.support.nng_host.PluginHost)."""
from tests.support.nng_host import PluginHost


def assert_one_line_error(reply: dict, word: str) -> None:
    """The plugin answered a call with its one-line error (state false), and it names `word`.

    Raises:
        AssertionError: the call succeeded, or the message is several lines, a traceback or lacks `word`.
    """
    assert reply["state"] is False, reply
    message = reply["result"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message, message
    assert word in message, message


def window_loaded(host: PluginHost, symbol: str) -> None:
    """Until `symbol`'s model copies are loaded: kuiperd validates a rule's call when it is created,
    and that starts the load (README); no window is sent before, so none meets "still loading".

    Raises:
        AssertionError: the Validate call was refused; PluginHost's wait raises if the load never shows.
    """
    assert host.call(symbol, "Validate", [{"Name": "image"}])["state"] is True
    host.wait_for_output(f"{symbol}: model loaded")
