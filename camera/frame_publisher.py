"""Frames to one MQTT topic with paho-mqtt, reconnecting with backoff when the broker goes away.

Frames are only handed to paho while the broker is connected: a frame due while it is away is
dropped (the bridge counts it) rather than queued, so a broker that comes back gets the camera's
present, not a backlog. Refused credentials are fatal (retrying cannot help); everything else is
retried with paho's backoff (1 s, doubling, at most MAX_BACKOFF_S).
"""
from __future__ import annotations

import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from core.errors import InputError

MAX_BACKOFF_S = 10
# Frames paho may hold unacknowledged (QoS 1 and 2) before a new one is dropped instead.
MAX_QUEUED = 10
# CONNACK answers that retrying cannot fix: MQTT 5 codes, which paho also maps MQTT 3.1.1's 4 and 5 to.
REFUSED_CREDENTIALS = {134: "bad user name or password", 135: "not authorized"}
SCHEMES = {"tcp": False, "mqtt": False, "ssl": True, "tls": True, "mqtts": True}


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # TLS without checking the broker's certificate and name

    @staticmethod
    def parse_address(text: str) -> tuple[str, int | None, bool]:
        """'host', 'host:port' or 'scheme://host[:port]' -> (host, port or None, TLS by scheme)."""
        tls = False
        if "://" in text:
            scheme, text = text.split("://", 1)
            if scheme.lower() not in SCHEMES:
                raise InputError(f"--mqtt: unknown scheme {scheme}://, use one of "
                                 f"{', '.join(s + '://' for s in SCHEMES)} or host:port")
            tls = SCHEMES[scheme.lower()]
        text = text.rstrip("/")
        if text.startswith("["):  # [IPv6]:port
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, ""
        if not host:
            raise InputError(f"--mqtt: no host in {text!r}")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise InputError(f"--mqtt: the port must be a number from 1 to 65535, got {port!r}")
        return host, int(port) if port else None, tls

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class FramePublisher:
    def __init__(self, broker: Broker, topic: str, qos: int, client_name: str, log: Callable[[str], None]):
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.log = log
        self.fatal: str | None = None  # set when the broker refused us for good
        self.reconnects = 0
        self._connected = threading.Event()
        self._answered = threading.Event()  # the first CONNACK, good or bad
        self._stopping = False
        self._ever_connected = False
        self._last: mqtt.MQTTMessageInfo | None = None
        self.client_id = f"{client_name}-{uuid.uuid4().hex[:8]}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311)
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            try:
                client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file,
                               cert_reqs=ssl.CERT_NONE if broker.insecure else ssl.CERT_REQUIRED)
            except (OSError, ValueError) as e:  # a file that is missing or not PEM
                raise InputError(f"TLS files for the broker: {tls_reason(e)}") from None
            client.tls_insecure_set(broker.insecure)
        client.reconnect_delay_set(1, MAX_BACKOFF_S)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, wait_s: float = 5.0) -> FramePublisher:
        """Connect (or keep trying in the background); InputError for what retrying cannot fix."""
        b = self.broker
        try:
            self.client.connect(b.host, b.port, keepalive=30)
        except socket.gaierror as e:
            raise InputError(f"cannot resolve the broker host {b.host}: {e.strerror}") from None
        except ssl.SSLError as e:
            raise InputError(f"TLS with the broker {b.address} failed: {tls_reason(e)}") from None
        except OSError as e:
            self.log(f"broker {b.address} not reachable ({e.strerror or e}); retrying with backoff")
            self.client.loop_start()
            return self
        self.client.loop_start()
        if not self._answered.wait(wait_s):
            self.log(f"no answer from the broker {b.address} within {wait_s:g} s "
                     f"(a TLS port without mqtts://?); retrying with backoff")
        if self.fatal:
            self.stop()
            raise InputError(self.fatal)
        return self

    def publish(self, payload: bytes) -> bool:
        """False when the frame was not handed over: the broker is away or paho's queue is full."""
        if not self._connected.is_set():
            return False
        info = self.client.publish(self.topic, payload, qos=self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self._last = info
        return True

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until the last frame handed over is with the broker (a file's last frames count too)."""
        if self._last is not None and self._connected.is_set():
            try:
                self._last.wait_for_publish(timeout_s)
            except RuntimeError:  # the connection went away meanwhile: nothing left to wait for
                pass

    def stop(self) -> None:
        self._stopping = True
        if self._connected.is_set():
            self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            why = REFUSED_CREDENTIALS.get(reason_code.value)
            if why:
                self.fatal = f"the broker {self.broker.address} refused the connection: {why}"
            else:
                self.log(f"the broker {self.broker.address} refused the connection ({reason_code}); retrying")
            self._answered.set()
            return
        self._connected.set()
        self._answered.set()
        if self._ever_connected:
            self.reconnects += 1
            self.log(f"broker {self.broker.address} is back")
        else:
            self.log(f"connected to {self.broker.address} as {self.client_id}, "
                     f"publishing to {self.topic!r} at QoS {self.qos}")
        self._ever_connected = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stopping:
            why = "the connection closed" if reason_code.value == 128 else str(reason_code)  # 128: unspecified
            self.log(f"broker {self.broker.address} lost ({why}); reconnecting with backoff")


def tls_reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"certificate verify failed ({error.verify_message}): give the CA that signed the broker's "
                "certificate with --tls-ca")
    return str(getattr(error, "reason", None) or error)
