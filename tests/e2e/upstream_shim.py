"""A recording, always-gzipping HTTP hop between kqlgate and the real engine.

duckdb-kql never compresses its answers, so without this hop kqlgate's gzip
handling (pass through when the client accepts gzip, decompress otherwise) is
never exercised. This hop forwards each request to the engine unchanged and
gzips every response body, setting `Content-Encoding: gzip` whether or not the
request asked for it. That is stricter than a real Kusto, and deliberately so:
whatever kqlgate asks upstream for, it must hand a non-gzip client plain JSON.

It also records what kqlgate sent upstream (path, headers, body decoded), so
tests can check the rewritten `db` and that tenant credentials never leave
kqlgate.

A body containing `__e2e_slow__` is held until the test calls `release()` (at
most HOLD_LIMIT seconds, so a failed test cannot hang the suite), so a test can
keep a request in flight (max_concurrent) for exactly as long as it needs.
"""
from __future__ import annotations

import gzip
import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_MARKER = b"__e2e_slow__"
HOLD_LIMIT = 30.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # after undoing any request Content-Encoding: gzip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

    def _forward(self):
        shim: Shim = self.server.shim  # type: ignore[attr-defined]
        raw = self._read_body()
        body = raw
        encoding = self.headers.get("Content-Encoding", "").lower()
        if "gzip" in encoding:
            body = gzip.decompress(raw)
        headers = {k.lower(): v for k, v in self.headers.items()}
        shim.record(Recorded(self.command, self.path, headers, body))
        if SLOW_MARKER in body:
            shim.held.wait(HOLD_LIMIT)

        up = urlsplit(shim.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        fwd = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "content-encoding",
                                 "connection", "accept-encoding")
        }
        fwd["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body if self.command != "GET" else None, headers=fwd)
        resp = conn.getresponse()
        payload = gzip.compress(resp.read())
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-type",) or k.lower().startswith("x-ms-"):
                self.send_header(k, v)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        conn.close()

    do_POST = _forward
    do_GET = _forward


class Shim:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self._lock = threading.Lock()
        self._records: list[Recorded] = []
        self.held = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.shim = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Shim":
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def release(self):
        """Lets held (marked) requests through, now and from now on."""
        self.held.set()

    def hold(self):
        """Holds marked requests again."""
        self.held.clear()

    def record(self, rec: Recorded):
        with self._lock:
            self._records.append(rec)

    def find(self, marker: str) -> list[Recorded]:
        """Requests whose (decoded) body contains *marker*."""
        with self._lock:
            return [r for r in self._records if marker.encode() in r.body]
