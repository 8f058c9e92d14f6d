"""Compression both ways, and what kqlgate actually sends upstream.

Tenants `gzipped` and `bearer` reach the engine through the recording,
always-gzipping shim (upstream_shim.py); the others reach it directly.
"""
from __future__ import annotations

import gzip
import json
import threading
import time
import uuid

import pytest
import requests

from conftest import MAX_BODY_BYTES, assert_envelope, primary_rows, states
from upstream_shim import HOLD_LIMIT, SLOW_MARKER


def test_gzip_request_body_accepted(gateway):
    body = gzip.compress(json.dumps({"db": "Samples", "csl": "StormEvents | project State, Reporter"}).encode())
    resp = gateway.post("/v1/rest/query", body,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200, resp.text
    rows = primary_rows(resp)
    assert {r["Reporter"] for r in rows} == {"contoso"}
    assert {r["State"] for r in rows} == states("contoso")


def test_gzip_request_body_still_checked(gateway):
    """The db check applies to compressed bodies too."""
    body = gzip.compress(json.dumps({"db": gateway.guids["fabrikam"], "csl": "StormEvents"}).encode())
    resp = gateway.post("/v1/rest/query", body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert_envelope(resp, 403, "Forbidden", message_contains="is not accessible to tenant")


def test_gzip_bomb_is_413(gateway):
    """max_body_bytes must bound the decompressed size, not just the bytes on the wire."""
    inflated = json.dumps({"db": "", "csl": "print 1 // " + "a" * (MAX_BODY_BYTES * 8)}).encode()
    body = gzip.compress(inflated)
    assert len(body) < MAX_BODY_BYTES // 4
    resp = gateway.post("/v1/rest/query", body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert_envelope(resp, 413, "PayloadTooLarge")


def _raw(resp: requests.Response) -> bytes:
    return resp.raw.read(decode_content=False)


def test_gzip_response_passed_through_when_accepted(gateway):
    resp = gateway.post("/v2/rest/query", {"db": "", "csl": "StormEvents | project State, Reporter"},
                        tenant="gzipped", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert resp.status_code == 200
    raw = _raw(resp)
    assert resp.headers.get("Content-Encoding", "").lower() == "gzip", dict(resp.headers)
    assert raw[:2] == b"\x1f\x8b", raw[:64]
    frames = json.loads(gzip.decompress(raw))
    table = next(f for f in frames if f.get("TableKind") == "PrimaryResult")
    assert {row[0] for row in table["Rows"]} == states("gzipped")


@pytest.mark.parametrize("accept", ["identity", None])
def test_gzip_response_decompressed_when_not_accepted(gateway, accept):
    headers = {"Accept-Encoding": accept} if accept else {}
    session = requests.Session()
    if accept is None:
        session.headers.pop("Accept-Encoding", None)  # send no Accept-Encoding at all
    h = {"Accept": "application/json", **gateway.auth("gzipped"), **headers}
    resp = session.post(gateway.url + "/v1/rest/query", json={"db": "", "csl": "StormEvents | project State"},
                        headers=h, stream=True, timeout=60)
    assert resp.status_code == 200
    raw = _raw(resp)
    assert "gzip" not in resp.headers.get("Content-Encoding", "").lower(), dict(resp.headers)
    payload = json.loads(raw)  # plain JSON on the wire
    assert {row[0] for row in payload["Tables"][0]["Rows"]} == states("gzipped")


def test_upstream_sees_rewritten_db_and_no_tenant_credentials(gateway):
    marker = f"m{uuid.uuid4().hex}"
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": f'print marker = "{marker}"'}, tenant="gzipped")
    assert resp.status_code == 200, resp.text
    seen = gateway.shim.find(marker)
    assert len(seen) == 1, seen
    upstream = seen[0]
    assert upstream.path.split("?")[0] == "/v1/rest/query"
    assert json.loads(upstream.body)["db"] == gateway.guids["gzipped"]
    assert "authorization" not in upstream.headers, upstream.headers
    key = gateway.keys["gzipped"]
    for name, value in upstream.headers.items():
        assert key not in value and "Basic " not in value, (name, value)


def test_refused_request_never_reaches_upstream(gateway):
    marker = f"m{uuid.uuid4().hex}"
    resp = gateway.post("/v2/rest/query", {"db": "GZIPPED-NOT-AN-ALIAS", "csl": f'print "{marker}"'}, tenant="gzipped")
    assert_envelope(resp, 403, "Forbidden", message_contains="is not accessible to tenant")
    assert gateway.shim.find(marker) == [], "a refused request reached upstream"


def test_bearer_env_cluster_sends_token_upstream(gateway):
    marker = f"m{uuid.uuid4().hex}"
    resp = gateway.post("/v1/rest/query", {"db": gateway.guids["bearer"], "csl": f'print marker = "{marker}"'},
                        tenant="bearer")
    assert resp.status_code == 200, resp.text
    assert primary_rows(resp)[0]["marker"] == marker
    seen = gateway.shim.find(marker)
    assert len(seen) == 1, seen
    assert seen[0].headers.get("authorization") == f"Bearer {gateway.upstream_token}", seen[0].headers
    assert json.loads(seen[0].body)["db"] == gateway.guids["bearer"]


def test_max_concurrent_exceeded_is_429(gateway):
    """`gzipped` has max_concurrent = 1; the shim holds a marked request upstream."""
    slow_result: dict = {}

    def slow():
        slow_result["resp"] = gateway.post(
            "/v1/rest/query", {"db": "", "csl": f'print "{SLOW_MARKER.decode()}"'}, tenant="gzipped")

    gateway.shim.hold()
    worker = threading.Thread(target=slow)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not gateway.shim.find(SLOW_MARKER.decode()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.shim.find(SLOW_MARKER.decode()), "slow request never reached upstream"
        second = gateway.post("/v1/rest/query", {"db": "", "csl": "print 2"}, tenant="gzipped")
        assert_envelope(second, 429, "TooManyRequests")
        retry_after = second.headers.get("Retry-After", "")
        assert retry_after.isdigit() and int(retry_after) >= 1, f"Retry-After {retry_after!r}"
    finally:
        gateway.shim.release()
        worker.join(timeout=HOLD_LIMIT + 30)
    assert slow_result["resp"].status_code == 200, slow_result["resp"].text
    # Once the slow one is done the slot is free again.
    assert gateway.post("/v1/rest/query", {"db": "", "csl": "print 3"}, tenant="gzipped").status_code == 200
