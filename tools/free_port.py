"""A free TCP port on 127.0.0.1, for the servers the tests, the bench and the demos start
(brokers, cameras, services)."""
import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago: for servers that cannot bind port 0 and report the port
    they got (kuiperd, mosquitto, ffmpeg). Another process may take it before the server binds it
    (a shared box): the caller starts the server again on a new one when it says "address in use"
    (tools/harness.py does). A server that can report its port should bind 0 instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
