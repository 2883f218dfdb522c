"""A TCP forwarder between a client and a broker: the device's network, cut and restored
for real (nothing about MQTT is faked). Shared by the agent, delivery and fault tests."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """A TCP forwarder from ``port`` to a broker: the device's network. ``down()`` closes
    every connection and stops listening (the device is offline, nothing about MQTT is
    faked); ``up()`` listens on the same port again."""

    def __init__(self, port: int, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.port = port
        self._upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.up()

    def up(self) -> None:
        """Accept connections again."""
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by down()
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        """Cut every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    close = down
