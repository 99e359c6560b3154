"""A free TCP port on 127.0.0.1, for the servers tests start (brokers, cameras, services)."""
import socket

HOST = "127.0.0.1"


def free_port() -> int:
    # Bind to port 0 and let the kernel choose; there is a small race until the
    # server binds it, which is acceptable on a test machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
