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

Faults and reports, for the metrics and audit tests (test_metrics_prometheus.py):
- a body containing `__e2e_status_NNN__` is answered NNN (a Kusto-style error document,
  gzipped as usual) without reaching the engine: a failing or throttling cluster;
- `Shim(upstream, cost_report=f)`: for each answer of 200 to a query, `f(recorded)` may return
  a resource-consumption payload (a dict, as Kusto's `QueryResourceConsumption` Payload); it
  is added to the answer where Kusto puts it (v2: a row of the QueryCompletionInformation
  table; v1: a QueryStatus table) and kept as `recorded.cost`;
- `Shim(upstream, activity_ids=True)`: every answer gets an `x-ms-activity-id` header (a fresh
  GUID, kept as `recorded.activity_id`), as Kusto sends one.
"""
from __future__ import annotations

import gzip
import http.client
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_MARKER = b"__e2e_slow__"
HOLD_LIMIT = 30.0
STATUS_MARKER = re.compile(rb"__e2e_status_([1-5][0-9][0-9])__")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # after undoing any request Content-Encoding: gzip
    status: int | None = None  # what the shim answered
    activity_id: str | None = None  # the x-ms-activity-id it sent back (activity_ids=True)
    cost: dict | None = field(default=None)  # the payload it added (cost_report)


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
        rec = Recorded(self.command, self.path, headers, body)
        if shim.activity_ids:
            rec.activity_id = str(uuid.uuid4())
        shim.record(rec)
        if SLOW_MARKER in body:
            shim.held.wait(HOLD_LIMIT)
        fault = STATUS_MARKER.search(body)
        if fault:
            status = int(fault.group(1))
            error = {"error": {"code": "E2EFault", "message": f"the test shim answers {status}",
                               "@type": "Kusto.E2E.Fault", "@message": "injected by upstream_shim",
                               "@permanent": False}}
            self._answer(rec, status, [("Content-Type", "application/json; charset=utf-8")],
                         json.dumps(error).encode())
            return

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
        answer = resp.read()
        conn.close()
        if shim.cost_report is not None and resp.status == 200 and "/rest/query" in self.path:
            rec.cost = shim.cost_report(rec)
            if rec.cost is not None:
                answer = _with_cost(answer, self.path, rec.cost)
        kept = [(k, v) for k, v in resp.getheaders()
                if k.lower() in ("content-type",) or k.lower().startswith("x-ms-")]
        self._answer(rec, resp.status, kept, answer)

    def _answer(self, rec: Recorded, status: int, headers: list[tuple[str, str]], answer: bytes):
        rec.status = status
        payload = gzip.compress(answer)
        self.send_response(status)
        for k, v in headers:
            if not (rec.activity_id and k.lower() == "x-ms-activity-id"):
                self.send_header(k, v)
        if rec.activity_id:
            self.send_header("x-ms-activity-id", rec.activity_id)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _forward
    do_GET = _forward


_GUID = "00000000-0000-0000-0000-000000000000"


def _with_cost(answer: bytes, path: str, cost: dict) -> bytes:
    """The engine's answer with Kusto's resource-consumption report added where Kusto puts it."""
    doc = json.loads(answer)
    report = json.dumps(cost)
    if path.startswith("/v2/"):
        table = next(f for f in doc if f.get("FrameType") == "DataTable"
                     and f.get("TableKind") == "QueryCompletionInformation")
        table["Rows"].append(["2026-01-01T00:00:00.0000000Z", "", _GUID, _GUID, _GUID, 6, "Stats", 0,
                              "S_OK (0)", 0, "QueryResourceConsumption", report])
    else:
        names = ("Timestamp", "Severity", "SeverityName", "StatusCode", "StatusDescription", "Count",
                 "RequestId", "ActivityId", "SubActivityId", "ClientActivityId")
        types = ("DateTime", "Int32", "String", "Int32", "String", "Int32", "Guid", "Guid", "Guid", "String")
        doc["Tables"].append({
            "TableName": f"Table_{len(doc['Tables'])}",
            "Columns": [{"ColumnName": n, "DataType": t, "ColumnType": t.lower()} for n, t in zip(names, types)],
            "Rows": [["2026-01-01T00:00:00.0000000Z", 4, "Info", 0, "Query completed successfully", 1,
                      _GUID, _GUID, _GUID, ""],
                     ["2026-01-01T00:00:00.0000000Z", 6, "Stats", 0, report, 1, _GUID, _GUID, _GUID, ""]],
        })
    return json.dumps(doc).encode()


class Shim:
    def __init__(self, upstream: str, cost_report: Callable[[Recorded], dict | None] | None = None,
                 activity_ids: bool = False):
        self.upstream = upstream
        self.cost_report = cost_report
        self.activity_ids = activity_ids
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

    def records(self) -> list[Recorded]:
        """Every request recorded so far."""
        with self._lock:
            return list(self._records)

    def find(self, marker: str) -> list[Recorded]:
        """Requests whose (decoded) body contains *marker*."""
        with self._lock:
            return [r for r in self._records if marker.encode() in r.body]
