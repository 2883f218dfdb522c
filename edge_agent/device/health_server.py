"""The agent's local HTTP endpoint: ``/metrics`` (Prometheus text) and ``/healthz`` (JSON,
200 when healthy, 503 otherwise), from the stdlib's ``http.server`` in a daemon thread.

It binds ``127.0.0.1`` unless configured otherwise: it answers anyone who can reach it,
and says nothing a local scraper or supervisor does not need.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from edge_agent.device.metrics import AgentMetrics

log = structlog.get_logger(__name__)


class HealthServer:
    """Serves one agent's metrics and health until :meth:`close`."""

    def __init__(self, metrics: AgentMetrics, bind: str = "127.0.0.1", port: int = 9108) -> None:
        self.metrics = metrics
        self.bind = bind
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The port it listens on (``None`` when not running)."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> bool:
        """Listen; a port already taken is logged, not fatal (the agent runs on)."""
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._reply(200, CONTENT_TYPE_LATEST, metrics.render())
                    elif path == "/healthz":
                        healthy, report = metrics.healthz()
                        body = json.dumps(report).encode()
                        self._reply(200 if healthy else 503, "application/json", body)
                    else:
                        self._reply(404, "text/plain; charset=utf-8", b"not found\n")
                except Exception:
                    log.exception("health_endpoint_failed", path=path)
                    self._reply(500, "text/plain; charset=utf-8", b"internal error\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds are not worth a log line

        try:
            server = ThreadingHTTPServer((self.bind, self.requested_port), Handler)
        except OSError as error:
            log.warning(
                "metrics_server_failed", bind=self.bind, port=self.requested_port, error=str(error)
            )
            return False
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics_server_listening", bind=self.bind, port=self.port)
        return True

    def close(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
