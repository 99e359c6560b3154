"""Serving the functions' nng channels: one runtime per function, for the process's whole life.

Two things in the eKuiper SDK / kuiperd v2.4.2 pair badly with a plugin that
offers several functions, and this module works around both:

1. kuiperd stores every function's START command under the same key
   (plugin_ins_manager.go), so when the plugin process is restarted (hot update,
   re-install) it replays START for only one function; the others would time out
   until kuiperd restarts. So the plugin's worker serves every function from the
   start, dialling each channel in the background: nng connects whenever kuiperd
   listens, now or later, and START (which the supervisor gets) only confirms.
2. The SDK answers an exception with its whole traceback; a rule should show one
   line. OneLineErrorRuntime catches the plugin's own errors.
"""
import json
import logging
import threading

from ekuiper import Function
from ekuiper.runtime.connection import PairChannel
from ekuiper.runtime.function import FunctionRuntime, encode_reply
from pynng import Req0

from core.errors import first_line

log = logging.getLogger(__name__)
FUNCTION_URL = "ipc:///tmp/func_{}.ipc"  # kuiperd's CreateFunctionChannel


class BackgroundDialChannel(PairChannel):
    """The SDK's function channel, dialled without blocking (the SDK gives up after 5 s and exits)."""

    def __init__(self, symbol: str):
        # Same options as the SDK: a 5 s receive timeout drives its keepalive handshakes.
        self.sock = Req0(recv_timeout=5000, resend_time=0)
        self.sock.recv_max_size = 0
        self.sock.dial(FUNCTION_URL.format(symbol), block=False)


class OneLineErrorRuntime(FunctionRuntime):
    """The SDK's function runtime on a background-dialled channel, with one-line errors."""

    def __init__(self, symbol: str, function: Function, expected_errors: tuple[type[Exception], ...]):
        self.s = function
        self.ch = BackgroundDialChannel(symbol)
        self.running = False
        self.key = f"func_{symbol}"
        self.expected_errors = expected_errors

    def do_run(self, req: bytes) -> bytes:
        try:
            request = json.loads(req)
            if request.get("func") != "Exec":
                return super().do_run(req)
            # The last argument is eKuiper's function context; these functions keep no per-rule state.
            return encode_reply(True, self.s.exec(request["arg"][:-1], None))
        except self.expected_errors as e:
            return encode_reply(False, str(e))
        except Exception as e:  # a bug or a runtime fault: the stack goes to the log, one line to the rule
            log.exception("unexpected error")
            return encode_reply(False, f"internal error: {first_line(e)}")


class FunctionServer:
    """Keeps one running runtime per function symbol."""

    def __init__(self, functions: dict[str, Function], expected_errors: tuple[type[Exception], ...]):
        self.functions = functions
        self.expected_errors = expected_errors
        self.runtimes = {}
        self.lock = threading.Lock()

    def serve_all(self) -> None:
        for symbol in self.functions:
            self.ensure_serving(symbol)

    def ensure_serving(self, symbol: str) -> None:
        with self.lock:
            runtime = self.runtimes.get(symbol)
            if runtime is not None and runtime.is_running():
                return
            runtime = OneLineErrorRuntime(symbol, self.functions[symbol], self.expected_errors)
            runtime.running = True  # is_running() holds from now on, before the thread gets going
            self.runtimes[symbol] = runtime
            threading.Thread(target=runtime.run, name=f"func-{symbol}", daemon=True).start()


class AlreadyServed:
    """What the SDK's START handler gets back (the worker serves every channel): nothing left to do."""

    def run(self) -> None:
        pass
