"""Metrics and the audit log, end to end, with a real Prometheus (issue 12).

One kqlgate with `[admin]` and `[audit]`, in front of the real engine through a recording shim
(upstream_shim.py) that can fail (`__e2e_status_NNN__`), hold (`__e2e_slow__`), add Kusto's
cost report to an answer and send an activity id. A real Prometheus (Debian's package, installed
by scripts/install-prometheus when missing) scrapes the admin listener every second.

Known traffic for two tenants — answered, refused for each of kqlgate's reasons, throttled by
the cluster, failed upstream — plus a third tenant on an unreachable cluster and failed sign-ins,
is written down as it is sent (the ledger). Then Prometheus's HTTP API must give exactly the
counts the ledger gives, `promtool check metrics` must pass on the exposition, the audit log
must hold exactly one record per request that the ledger explains field by field, and neither
may hold a key, an Authorization value, a token or a query text. Removing a tenant from the
config (and `kqlgate reload`) removes its series. A second kqlgate with
`include_query_text = true` shows the text does appear when asked.

"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import requests

from conftest import (REPO_ROOT, _STATE, _stop, _tail, _toml_str, aad_identity_toml, basic, free_port,
                      launch_kqlgate, new_key, run_kqlgate)
from upstream_shim import Shim

INSTALL_PROMETHEUS = REPO_ROOT / "scripts" / "install-prometheus"
MAX_BODY_BYTES = 16 * 1024
# Failed sign-ins allowed from one network before uncached checks get 429 (failure_budget);
# refilled at one a minute, so not within this test.
VERIFY_BURST = 6
# fabrikam's rate limit: this many requests, then (at 0.001/s) none for the rest of the test.
FABRIKAM_BURST = 6
# kqlgate's identity at cluster `aad`: a client of the test IdP of this test's own.
IDENTITY_CLIENT_ID = "3e7c0000-0000-4000-8000-0000000e7c12"
IDENTITY_SECRET_ENV = "KQLGATE_E2E_METRICS_SECRET"
TOKEN_LIFETIME = 1800
IDENTITY_LABEL = f"client-secret:{IDENTITY_CLIENT_ID}"
V1, V2 = "/v1/rest/query", "/v2/rest/query"
# Every field of an audit record (src/services/audit.rs AuditRecord), always present.
AUDIT_FIELDS = {
    "time", "tenant", "principal", "client_address", "route", "database", "client_request_id",
    "activity_id", "status", "outcome", "refusal_reason", "refused_construct", "duration_ms",
    "bytes_out", "query_hash", "query_text", "cost",
}
COST_FIELDS = {
    "execution_seconds", "cpu_seconds", "memory_peak_bytes", "cache_hot_hit_bytes",
    "cache_hot_miss_bytes", "cache_cold_hit_bytes", "cache_cold_miss_bytes", "rows_returned",
    "result_bytes", "from_results_cache", "has_errors", "cancelled",
}


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_tools() -> tuple[str, str]:
    """prometheus and promtool, installed by scripts/install-prometheus when missing. A failed
    install fails the test: the e2e suite never skips."""
    res = subprocess.run([str(INSTALL_PROMETHEUS)], capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        pytest.fail(f"scripts/install-prometheus exited {res.returncode}:\n{res.stderr}", pytrace=False)
    found = shutil.which("prometheus"), shutil.which("promtool")
    if not all(found):
        pytest.fail(f"prometheus/promtool still not on PATH after scripts/install-prometheus: {found}",
                    pytrace=False)
    return found  # type: ignore[return-value]


class Prometheus:
    """One Prometheus process scraping `target` every second, its data in `work`."""

    def __init__(self, binary: str, work: Path, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = target
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: kqlgate\n    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n",
            encoding="utf-8",
        )
        self.log = work / "prometheus.log"
        _STATE["prometheus log"] = self.log
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
                stdout=out, stderr=subprocess.STDOUT, cwd=work)

    def stop(self) -> None:
        _stop(self.proc)

    def api(self, path: str, **params) -> dict:
        resp = requests.get(self.url + path, params=params, timeout=10)
        assert resp.status_code == 200, f"Prometheus {path} {params}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert body.get("status") == "success", body
        return body["data"]

    def wait_until_up(self, timeout: float = 30) -> None:
        """Until the target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{_tail(self.log)}", pytrace=False)
            try:
                targets = self.api("/api/v1/targets")["activeTargets"]
                last = targets
                if any(t["scrapeUrl"].startswith(f"http://{self.target}/") and t["health"] == "up"
                       for t in targets):
                    return
            except (requests.ConnectionError, AssertionError):
                pass
            time.sleep(0.2)
        pytest.fail(f"Prometheus never scraped {self.target} successfully: {last}\n{_tail(self.log)}",
                    pytrace=False)

    def last_scrape(self) -> tuple[float, str, str]:
        """The kqlgate target's last scrape: when it began (time.time()), health, last error."""
        for t in self.api("/api/v1/targets")["activeTargets"]:
            if t["scrapeUrl"].startswith(f"http://{self.target}/"):
                stamp = re.sub(r"(\.\d{6})\d*", r"\1", t["lastScrape"]).replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp(), t["health"], t["lastError"]
        raise AssertionError(f"no target {self.target}")

    def wait_for_scrape_after(self, moment: float, timeout: float = 15) -> None:
        """Until a successful scrape that began after `moment` (a time.time()) is stored."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.last_scrape()
            began, health, error = seen
            if began > moment:
                assert health == "up" and not error, f"the scrape of kqlgate failed: {seen}"
                time.sleep(0.1)  # the scrape began after `moment`; let it be stored
                return
            time.sleep(0.1)
        pytest.fail(f"no scrape of kqlgate after {moment} within {timeout}s (last: {seen})", pytrace=False)

    def query(self, promql: str) -> dict[tuple, float]:
        """An instant vector as {labels (sorted, without job/instance): value}. Prometheus
        drops empty labels, so a `tenant=""` series comes back without a tenant."""
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        out = {}
        for sample in data["result"]:
            labels = {k: v for k, v in sample["metric"].items() if k not in ("job", "instance", "__name__")}
            out[tuple(sorted(labels.items()))] = float(sample["value"][1])
        return out

    def by(self, promql: str, *names: str) -> dict[tuple, float]:
        """An instant vector keyed by the values of `names` (missing label: "")."""
        out = {}
        for labels, value in self.query(promql).items():
            d = dict(labels)
            key = tuple(d.get(n, "") for n in names)
            assert key not in out, f"{promql}: two series for {key}"
            out[key] = value
        return out


# ---------------------------------------------------------------------------
# The traffic and its ledger
# ---------------------------------------------------------------------------


def timespan(seconds: float) -> str:
    """Kusto's timespan text, hh:mm:ss.fffffff."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{round((seconds - whole) * 1e7):07d}"


def cost_payload(i: int, results_cache: bool = False) -> tuple[dict, dict]:
    """A QueryResourceConsumption payload, distinct per `i`, and the figures it stands for
    (as an audit record's `cost`, less has_errors/cancelled)."""
    cache: dict = {"shards": {"hot": {"hitbytes": 4096 * i, "missbytes": 64 * i, "retrievebytes": 64 * i},
                              "cold": {"hitbytes": 512 * i, "missbytes": 8 * i, "retrievebytes": 8 * i},
                              "bypassbytes": 0}}
    if results_cache:
        cache["results_cache_origin"] = {"client_request_id": "KD2RunQuery;earlier",
                                         "started_on": "2026-01-01T00:00:00.0000000Z"}
    payload = {
        "QueryHash": f"e2e{i:013x}",
        "ExecutionTime": 0.5 * i,
        "resource_usage": {
            "cache": cache,
            "cpu": {"user": timespan(0.25 * i), "kernel": "00:00:00", "total cpu": timespan(0.25 * i),
                    "breakdown": {"query execution": timespan(0.25 * i)}},
            "memory": {"peak_per_node": 1_048_576 * i},
            "network": {"inter_cluster_total_bytes": 0, "cross_cluster_total_bytes": 0},
        },
        "input_dataset_statistics": {"extents": {"total": 1, "scanned": 1}, "rows": {"total": 10, "scanned": 10}},
        "dataset_statistics": [{"table_row_count": i, "table_size": 100 * i}, {"table_row_count": 1, "table_size": 7}],
        "cross_cluster_resource_usage": {},
    }
    figures = {
        "execution_seconds": 0.5 * i, "cpu_seconds": 0.25 * i, "memory_peak_bytes": 1_048_576 * i,
        "cache_hot_hit_bytes": 4096 * i, "cache_hot_miss_bytes": 64 * i,
        "cache_cold_hit_bytes": 512 * i, "cache_cold_miss_bytes": 8 * i,
        "rows_returned": i + 1, "result_bytes": 100 * i + 7, "from_results_cache": results_cache,
    }
    return payload, figures


@dataclass
class Sent:
    """One request as sent, and what it should have left in the metrics and the audit log."""

    tenant: str  # the tenant kqlgate signed it in as; "" when it did not
    route: str
    status: int
    crid: str
    csl: str | None  # the query text kqlgate read, if it read one
    database: str | None  # the database it resolved
    cluster: str | None  # the cluster it was sent to
    reached: bool  # whether that cluster answered (had a first byte)
    fingerprint: str | None  # the key the principal names
    refusal: str | None = None
    construct: str | None = None
    cost: dict | None = None  # the audit record's expected `cost`
    bytes: int = 0
    activity_id: str | None = None


@dataclass
class Stack:
    gateway_url: str
    admin_url: str
    config_path: Path
    audit_path: Path
    stderr_path: Path
    prometheus: Prometheus
    promtool: str
    bin_path: Path
    config_text: callable
    ledger: list[Sent]
    signin_failures: Counter  # tenant the caller named (if configured, else "") -> failures
    signin_refusals: Counter
    secrets: list[str]  # what may appear neither in /metrics nor in the audit log
    texts: list[str]  # query texts sent
    started: float  # time.time() before kqlgate started
    held_in_flight: int | None  # requests_in_flight{tenant="contoso"} while one was held
    contoso_auth: str  # an Authorization value that signs in as contoso
    env: dict = field(repr=False)  # kqlgate's environment (the identity's secret)
    shim: Shim = field(repr=False)


class Driver:
    """Sends requests to kqlgate and writes each into the ledger."""

    def __init__(self, url: str, shim: Shim, costs: dict[str, tuple[dict, dict]]):
        self.url, self.shim, self.costs = url, shim, costs
        self.ledger: list[Sent] = []
        self.lock = threading.Lock()
        self.n = 0

    def crid(self) -> str:
        with self.lock:
            self.n += 1
            return f"e2e-metrics;{self.n};{secrets.token_hex(4)}"

    def send(self, route: str, *, auth: str | None, status: int, tenant: str = "", body=None,
             raw: bytes | None = None, csl_read: bool = True, database: str | None = None,
             cluster: str | None = None, reached: bool = False, fingerprint: str | None = None,
             refusal: str | None = None, construct: str | None = None, cost: int | None = None,
             results_cache: bool = False, cost_section: bool = True) -> requests.Response:
        crid = self.crid()
        expected_cost = None
        if cost is not None:
            payload, figures = cost_payload(cost, results_cache)
            self.costs[crid] = (payload, figures)
            expected_cost = dict(figures)
        elif cost_section and reached and status == 200 and route == V2:
            # No report, but v2's DataSetCompletion: a record with empty figures.
            expected_cost = dict.fromkeys(COST_FIELDS - {"from_results_cache"})
            expected_cost["from_results_cache"] = False
        if expected_cost is not None:
            # v2 ends with DataSetCompletion, whose HasErrors/Cancelled the record carries; v1 has none.
            completion = False if route == V2 else None
            expected_cost.update(has_errors=completion, cancelled=completion)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity",
                   "Content-Type": "application/json; charset=utf-8", "x-ms-client-request-id": crid}
        if auth is not None:
            headers["Authorization"] = auth
        data = raw if raw is not None else json.dumps(body).encode()
        resp = requests.post(self.url + route, data=data, headers=headers, timeout=60)
        assert resp.status_code == status, (
            f"{route} {body if raw is None else raw[:80]!r}: expected {status}, got {resp.status_code}: "
            f"{resp.text[:1000]}")
        activity = None
        if reached:
            upstream = [r for r in self.shim.records() if r.headers.get("x-ms-client-request-id") == crid]
            if cluster != "dead":
                assert len(upstream) == 1, f"the shim saw {len(upstream)} requests with {crid}"
                activity = upstream[0].activity_id
                if cost is not None:
                    assert upstream[0].cost is not None, "the shim added no cost report"
        sent = Sent(tenant, route, status, crid, body.get("csl") if (csl_read and body) else None,
                    database, cluster, reached, fingerprint, refusal, construct, expected_cost,
                    len(resp.content), activity)
        with self.lock:
            self.ledger.append(sent)
        return resp


def fingerprint(phc: str) -> str:
    """What the audit log names a key by (src/config/tenant.rs key_fingerprint)."""
    return phc.rsplit("$", 1)[1][:10]


def query_hash(text: str) -> str:
    """The audit record's query_hash (src/services/audit.rs query_hash)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def metrics_text(admin_url: str, accept: str | None = None) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    resp = requests.get(admin_url + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text[:500]
    return resp


def sample_value(text: str, name: str, **labels) -> float | None:
    """The value of one series in a text exposition (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series[len(name):]))
        if series.split("{")[0] == name and found == {k: str(v) for k, v in labels.items()}:
            return float(value)
    return None


def audit_records(path: Path, expected: int, timeout: float = 10) -> list[dict]:
    """The audit log's records, once at least `expected` are written (the writer is a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # and no more than that
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for line in lines:
        record = json.loads(line)  # one JSON object a line, nothing else
        assert isinstance(record, dict), line
        records.append(record)
    return records


# ---------------------------------------------------------------------------
# The stack: Prometheus, the shim, kqlgate, and the traffic
# ---------------------------------------------------------------------------


def gateway_config(*, listen: str, admin: str, audit: Path, pid_file: Path, shim_url: str, idp_url: str,
                   dead_url: str, hashes: dict[str, list[str]], guids: dict[str, str], retired: bool) -> str:
    lines = [
        "# Written by tests/e2e/test_metrics_prometheus.py",
        "[server]", f"listen = {_toml_str(listen)}", f"max_body_bytes = {MAX_BODY_BYTES}",
        "watch_config = false", f"pid_file = {_toml_str(str(pid_file))}", "",
        "[auth]", f"verify_burst = {VERIFY_BURST}", "verify_per_minute = 1", "",
        "[admin]", f"listen = {_toml_str(admin)}", "",
        "[audit]", f"path = {_toml_str(str(audit))}", "",
        "[clusters.shim]", f"url = {_toml_str(shim_url)}", 'auth = "none"', "timeout_seconds = 30",
        "enforce_request_properties = false", "",
        "# the same upstream, reached as kqlgate's AAD identity (a token from the test IdP)",
        "[clusters.aad]", f"url = {_toml_str(shim_url)}",
        *aad_identity_toml(idp_url, IDENTITY_CLIENT_ID, secret_env=IDENTITY_SECRET_ENV),
        "timeout_seconds = 30", "enforce_request_properties = false", "",
    ]
    if retired:
        lines += ["# nothing listens there", "[clusters.dead]", f"url = {_toml_str(dead_url)}", 'auth = "none"',
                  "timeout_seconds = 5", "enforce_request_properties = false", ""]
    tenants = [
        ("contoso", "shim", ['aliases = ["Samples"]', "max_concurrent = 1"]),
        ("fabrikam", "aad", ['aliases = ["Fabrikam"]', "rate_per_second = 0.001", f"burst = {FABRIKAM_BURST}"]),
    ]
    if retired:
        tenants.append(("retired", "dead", []))
    for tenant, cluster, extra in tenants:
        lines += ["[[tenants]]", f"id = {_toml_str(tenant)}",
                  "key_hashes = [" + ", ".join(_toml_str(h) for h in hashes[tenant]) + "]",
                  f"cluster = {_toml_str(cluster)}", f"database = {_toml_str(guids[tenant])}", *extra, ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def stack(kqlgate_bin, engine, idp, prometheus_tools, tmp_path_factory) -> Stack:
    prometheus_bin, promtool = prometheus_tools
    work = tmp_path_factory.mktemp("metrics")
    costs: dict[str, tuple[dict, dict]] = {}

    def cost_report(rec):
        found = costs.get(rec.headers.get("x-ms-client-request-id", ""))
        return found[0] if found else None

    shim = Shim(engine.url, cost_report=cost_report, activity_ids=True).start()
    port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    prometheus = Prometheus(prometheus_bin, work, admin)  # scrapes (and fails) until kqlgate is up
    started = time.time()
    try:
        made = [new_key(kqlgate_bin) for _ in range(5)]
        (k1, h1), (k2, h2), (kf, hf), (kr, hr), (k_other, _) = made
        hashes = {"contoso": [h1, h2], "fabrikam": [hf], "retired": [hr]}
        guids = {"contoso": engine.guid("contoso"), "fabrikam": engine.guid("fabrikam"),
                 "retired": engine.guid("northwind")}
        secret = "metrics-secret-" + secrets.token_hex(12)
        idp.admin(client_lifetimes={IDENTITY_CLIENT_ID: TOKEN_LIFETIME})
        dead_url = f"http://127.0.0.1:{free_port()}"

        def config_text(retired: bool) -> str:
            return gateway_config(listen=f"127.0.0.1:{port}", admin=admin, audit=work / "audit.jsonl",
                                  pid_file=work / "kqlgate.pid", shim_url=shim.url, idp_url=idp.url,
                                  dead_url=dead_url, hashes=hashes, guids=guids, retired=retired)

        env = {**os.environ, IDENTITY_SECRET_ENV: secret}
        gate = launch_kqlgate(kqlgate_bin, work, "kqlgate-metrics", config_text(True), port, env)
    except BaseException:
        prometheus.stop()
        shim.stop()
        raise
    try:
        admin_url = f"http://{admin}"
        prometheus.wait_until_up()
        d = Driver(gate.url, shim, costs)
        fp1, fp2, fpf, fpr = (fingerprint(h) for h in (h1, h2, hf, hr))
        a1, a2, af, ar = (basic(t, k) for t, k in (("contoso", k1), ("contoso", k2), ("fabrikam", kf),
                                                    ("retired", kr)))
        c = dict(tenant="contoso", auth=a1, fingerprint=fp1)
        g_c, g_f = guids["contoso"], guids["fabrikam"]

        # --- contoso: answered (two keys, v1 and v2, cost reports), refused, failed upstream ---
        d.send(V2, **c, body={"db": "Samples", "csl": "StormEvents | take 3"}, status=200,
               database=g_c, cluster="shim", reached=True, cost=1)
        d.send(V2, **c, body={"db": g_c, "csl": "StormEvents | summarize n = count() by State"}, status=200,
               database=g_c, cluster="shim", reached=True, cost=2, results_cache=True)
        d.send(V1, **c, body={"db": "samples", "csl": "StormEvents | take 2"}, status=200,
               database=g_c, cluster="shim", reached=True, cost=3)
        c2 = dict(tenant="contoso", auth=a2, fingerprint=fp2)
        d.send(V1, **c2, body={"csl": "print via_second_key = 1"}, status=200,
               database=g_c, cluster="shim", reached=True, cost=4)
        # Answered without a cost report: the record's figures stay empty.
        d.send(V2, **c2, body={"csl": "print without_report = 2"}, status=200,
               database=g_c, cluster="shim", reached=True)
        d.send(V2, **c, body={"db": g_f, "csl": "StormEvents | take 1"}, status=403, refusal="db")
        d.send(V2, **c, body={"db": "Samples", "csl": 'database("other").StormEvents | take 1'}, status=403,
               database=g_c, refusal="guard", construct="database")
        d.send(V1, **c, body={"db": "Samples", "csl": "print padded = '" + "x" * MAX_BODY_BYTES + "'"},
               status=413, csl_read=False, refusal="body_size")
        d.send(V1, **c, raw=b'{"db": "Samples", "csl": "StormEvents | take', status=400, refusal="bad_request")
        d.send(V2, **c, body={"csl": 'print fault = "__e2e_status_503__"'}, status=503,
               database=g_c, cluster="shim", reached=True)
        d.send(V1, **c, body={"csl": 'print fault = "__e2e_status_429__"'}, status=429,
               database=g_c, cluster="shim", reached=True)
        # concurrency: max_concurrent = 1, and one request held at the shim.
        held: dict = {}
        holder = threading.Thread(target=lambda: held.update(resp=d.send(
            V2, **c, body={"csl": 'print held = "__e2e_slow__"'}, status=200,
            database=g_c, cluster="shim", reached=True, cost=5)), daemon=True)
        holder.start()
        deadline = time.monotonic() + 15
        while not shim.find("__e2e_slow__"):
            assert time.monotonic() < deadline and holder.is_alive(), "the held request never reached the shim"
            time.sleep(0.02)
        d.send(V2, **c, body={"csl": "print refused_for_room = 1"}, status=429, csl_read=False,
               refusal="concurrency")
        held_in_flight = sample_value(metrics_text(admin_url).text, "kqlgate_requests_in_flight", tenant="contoso")
        shim.release()
        holder.join(30)
        assert "resp" in held, "the held request did not end"

        # --- fabrikam: behind kqlgate's AAD identity; rate-limited after FABRIKAM_BURST ---
        f = dict(tenant="fabrikam", auth=af, fingerprint=fpf)
        d.send(V2, **f, body={"db": "Fabrikam", "csl": "StormEvents | take 1"}, status=200,
               database=g_f, cluster="aad", reached=True, cost=6)
        d.send(V1, **f, body={"csl": "StormEvents | count"}, status=200,
               database=g_f, cluster="aad", reached=True, cost=7)
        d.send(V1, **f, body={"db": g_c, "csl": "StormEvents | count"}, status=403, refusal="db")
        d.send(V2, **f, body={"csl": 'cluster("othercluster").database("x").StormEvents | count'}, status=403,
               database=g_f, refusal="guard", construct="cluster")
        d.send(V2, **f, raw=b"this is not json", status=400, refusal="bad_request")
        d.send(V2, **f, body={"csl": 'print fault = "__e2e_status_500__"'}, status=500,
               database=g_f, cluster="aad", reached=True)
        assert sum(1 for s in d.ledger if s.tenant == "fabrikam") == FABRIKAM_BURST
        for _ in range(2):
            d.send(V2, **f, body={"csl": "print over_the_rate = 1"}, status=429, csl_read=False, refusal="rate")

        # --- retired: its cluster is down ---
        r = dict(tenant="retired", auth=ar, fingerprint=fpr)
        d.send(V2, **r, body={"csl": "StormEvents | take 1"}, status=502, database=guids["retired"], cluster="dead")
        d.send(V1, **r, body={"csl": "StormEvents | take 1"}, status=502, database=guids["retired"], cluster="dead")
        d.send(V1, **r, body={"csl": 'database("x").T | take 1'}, status=403, database=guids["retired"],
               refusal="guard", construct="database")

        # --- sign-ins that fail (every valid key above is verified, so cached, by now) ---
        failures: Counter = Counter()
        none = dict(body={"csl": "print n = 1"}, csl_read=False)
        d.send(V2, auth=None, status=401, **none)
        for tenant, key, label in [("nobody", k1, ""), ("nobody", kf, ""), ("contoso", k_other, "contoso"),
                                   ("fabrikam", k_other, "fabrikam"), ("fabrikam", k1, "fabrikam"),
                                   ("retired", k_other, "retired")]:
            d.send(V1 if label else V2, auth=basic(tenant, key), status=401, **none)
            failures[label] += 1
        assert sum(failures.values()) == VERIFY_BURST
        # Past the budget of failures: refused before the key is checked.
        d.send(V2, auth=basic("nobody-else", k_other), status=429, **none)
        refusals = Counter({"failure_budget": 1})
        # A key verified before is still let in (cached credentials skip the budgets).
        d.send(V2, **c, body={"csl": "print still_in = 1"}, status=200,
               database=g_c, cluster="shim", reached=True, cost=8)

        # The token kqlgate sent upstream for cluster aad: in neither output.
        tokens = {r.headers.get("authorization", "") for r in shim.records()
                  if r.headers.get("x-ms-client-request-id", "").startswith("e2e-metrics;")}
        tokens.discard("")
        assert tokens and all(t.startswith("Bearer ") for t in tokens), tokens
        texts = [s.csl for s in d.ledger if s.csl] + ["StormEvents | take", "this is not json"]
        secret_values = [k1, k2, kf, kr, k_other, secret, a1, a2, af, ar,
                         *(a.split(" ", 1)[1] for a in (a1, a2, af, ar)),
                         *tokens, *(t.split(" ", 1)[1] for t in tokens)]
        yield Stack(gate.url, admin_url, gate.config_path, work / "audit.jsonl", gate.stderr_path, prometheus,
                    promtool, kqlgate_bin, config_text, d.ledger, failures, refusals, secret_values, texts,
                    started, held_in_flight, a1, env, shim)
    finally:
        shim.release()
        gate.stop()
        prometheus.stop()
        shim.stop()


@pytest.fixture(scope="module")
def scraped(stack) -> Stack:
    """The stack once Prometheus has scraped kqlgate after all the traffic."""
    stack.prometheus.wait_for_scrape_after(time.time() + 0.05)
    return stack


# ---------------------------------------------------------------------------
# What Prometheus holds
# ---------------------------------------------------------------------------


def test_prometheus_has_the_per_tenant_counts_of_the_traffic(scraped):
    p, ledger = scraped.prometheus, scraped.ledger
    assert p.by("kqlgate_requests_total", "tenant", "route", "status") == {
        (t, r, str(s)): n for (t, r, s), n in Counter((s.tenant, s.route, s.status) for s in ledger).items()}
    assert p.by("kqlgate_request_duration_seconds_count", "tenant", "route") == dict(
        Counter((s.tenant, s.route) for s in ledger))
    assert p.by("kqlgate_refusals_total", "tenant", "reason") == dict(
        Counter((s.tenant, s.refusal) for s in ledger if s.refusal))
    assert p.by("kqlgate_guard_refusals_total", "tenant", "construct") == dict(
        Counter((s.tenant, s.construct) for s in ledger if s.construct))
    by_tenant_bytes: dict = defaultdict(int)
    for s in ledger:
        by_tenant_bytes[(s.tenant,)] += s.bytes
    assert p.by("kqlgate_response_bytes_total", "tenant") == dict(by_tenant_bytes)
    signed_in = {s.tenant for s in ledger if s.tenant}
    assert p.by("kqlgate_requests_in_flight", "tenant") == {(t,): 0 for t in signed_in}
    assert scraped.held_in_flight == 1, "requests_in_flight while one request was held at the cluster"


def test_prometheus_has_signins_upstream_and_identity(scraped):
    p, ledger = scraped.prometheus, scraped.ledger
    assert p.by("kqlgate_signin_failures_total", "tenant") == {(t,): n for t, n in scraped.signin_failures.items()}
    assert p.by("kqlgate_signin_refusals_total", "reason") == {(r,): n for r, n in scraped.signin_refusals.items()}
    failed = Counter((s.cluster, "5xx") for s in ledger if s.reached and s.status >= 500)
    failed.update((s.cluster, "connect") for s in ledger if s.cluster == "dead")
    assert p.by("kqlgate_upstream_errors_total", "cluster", "kind") == dict(failed)
    assert p.by("kqlgate_cluster_throttled_total", "cluster") == dict(
        Counter((s.cluster,) for s in ledger if s.reached and s.status == 429))
    assert p.by("kqlgate_upstream_first_byte_seconds_count", "cluster") == dict(
        Counter((s.cluster,) for s in ledger if s.reached))
    pool = p.by("kqlgate_upstream_pool_connections", "cluster")
    assert set(pool) <= {("shim",), ("aad",), ("dead",)} and all(v >= 0 for v in pool.values()), pool

    expiry = p.by("kqlgate_token_expiry_seconds", "identity")
    assert set(expiry) == {(IDENTITY_LABEL,)}, expiry
    left, age = expiry[(IDENTITY_LABEL,)], time.time() - scraped.started
    assert TOKEN_LIFETIME - age - 5 <= left <= TOKEN_LIFETIME, (left, age)
    assert p.by("kqlgate_token_refreshes_total", "identity", "result") == {(IDENTITY_LABEL, "success"): 1}

    version = run_kqlgate(scraped.bin_path, "--version").stdout.split()[-1]
    assert p.by("kqlgate_build_info", "version") == {(version,): 1}
    assert p.query("kqlgate_connections_open"), "no kqlgate_connections_open"


def test_prometheus_has_the_cost_the_cluster_reported(scraped):
    p = scraped.prometheus
    costed = [s for s in scraped.ledger if s.cost and s.cost["cpu_seconds"] is not None]
    assert {s.tenant for s in costed} == {"contoso", "fabrikam"}

    def per_tenant(figure: str) -> dict:
        out: dict = defaultdict(float)
        for s in costed:
            out[(s.tenant,)] += s.cost[figure]
        return dict(out)

    assert p.by("kqlgate_query_cpu_seconds_total", "tenant") == per_tenant("cpu_seconds")
    assert p.by("kqlgate_query_execution_seconds_total", "tenant") == per_tenant("execution_seconds")
    assert p.by("kqlgate_query_rows_returned_total", "tenant") == per_tenant("rows_returned")
    scanned: dict = defaultdict(float)
    for s in costed:
        for tier in ("hot", "cold"):
            for result in ("hit", "miss"):
                scanned[(s.tenant, tier, result)] += s.cost[f"cache_{tier}_{result}_bytes"]
    assert p.by("kqlgate_query_scanned_bytes_total", "tenant", "cache", "result") == dict(scanned)
    assert p.by("kqlgate_query_results_cache_hits_total", "tenant") == dict(
        Counter((s.tenant,) for s in costed if s.cost["from_results_cache"]))
    # The README's "top tenants by CPU".
    top = p.query("topk(1, sum by (tenant) (kqlgate_query_cpu_seconds_total))")
    want = max(per_tenant("cpu_seconds").items(), key=lambda kv: kv[1])[0][0]
    assert [dict(k).get("tenant") for k in top] == [want], top


# ---------------------------------------------------------------------------
# The exposition itself, and the admin listener
# ---------------------------------------------------------------------------


def test_exposition_passes_promtool_and_holds_no_secret(scraped):
    classic = metrics_text(scraped.admin_url)
    assert classic.headers["Content-Type"].startswith("text/plain; version=0.0.4"), classic.headers
    check = subprocess.run([scraped.promtool, "check", "metrics"], input=classic.text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (
        f"promtool check metrics exited {check.returncode}:\n{check.stdout}{check.stderr}")
    open_metrics = metrics_text(scraped.admin_url, "application/openmetrics-text; version=1.0.0")
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text"), open_metrics.headers
    assert open_metrics.text.rstrip().endswith("# EOF"), open_metrics.text[-200:]
    for text in (classic.text, open_metrics.text):
        for value in scraped.secrets:
            assert value not in text, "a key, Authorization value, secret or token is in /metrics"
        for query in scraped.texts:
            assert query not in text, f"query text {query[:60]!r} is in /metrics"
        assert "Basic " not in text and "Bearer " not in text
        labels = set(re.findall(r'tenant="([^"]*)"', text))
        assert labels <= {"", "contoso", "fabrikam", "retired"}, labels  # only configured ids
        assert "nobody" not in text


def test_admin_listener_serves_probes_and_public_listener_no_metrics(scraped):
    for path, status in (("/healthz", "alive"), ("/readyz", "ready")):
        resp = requests.get(scraped.admin_url + path, timeout=5)
        assert resp.status_code == 200 and resp.json() == {"status": status}, (path, resp.status_code, resp.text)
    assert requests.get(scraped.admin_url + "/v2/rest/query", timeout=5).status_code == 404
    assert requests.post(scraped.admin_url + "/metrics", timeout=5).status_code == 405
    public = requests.get(scraped.gateway_url + "/metrics", timeout=5)
    assert public.status_code == 404, (public.status_code, public.text[:300])
    assert "kqlgate_" not in public.text
    # and the admin listener answers none of the Kusto routes
    assert requests.post(scraped.admin_url + V2, json={"csl": "print 1"}, timeout=5).status_code == 405


# ---------------------------------------------------------------------------
# The audit log
# ---------------------------------------------------------------------------


def test_audit_log_has_one_exact_record_per_request(scraped):
    ledger = scraped.ledger
    records = audit_records(scraped.audit_path, len(ledger))
    assert len(records) == len(ledger), f"{len(records)} audit records for {len(ledger)} requests"
    by_crid = {r["client_request_id"]: r for r in records}
    assert set(by_crid) == {s.crid for s in ledger}, "audit records do not match the requests one to one"
    for s in ledger:
        rec = by_crid[s.crid]
        where = f"audit record of {s.crid} ({s.tenant or '-'} {s.route} {s.status} {s.refusal or ''})"
        assert set(rec) == AUDIT_FIELDS, f"{where}: fields {sorted(rec)}"
        datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
        assert rec["tenant"] == (s.tenant or None), where
        want_principal = {"kind": "basic", "key_fingerprint": s.fingerprint} if s.fingerprint else None
        assert rec["principal"] == want_principal, f"{where}: {rec['principal']}"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", rec["client_address"]), where
        assert (rec["route"], rec["status"]) == (s.route, s.status), where
        assert rec["database"] == s.database, f"{where}: {rec['database']}"
        assert rec["activity_id"] == s.activity_id, f"{where}: {rec['activity_id']}"
        assert rec["outcome"] == "complete", where
        assert (rec["refusal_reason"], rec["refused_construct"]) == (s.refusal, s.construct), where
        assert isinstance(rec["duration_ms"], int) and rec["duration_ms"] >= 0, where
        assert rec["bytes_out"] == s.bytes, where
        assert rec["query_hash"] == (query_hash(s.csl) if s.csl else None), where
        assert rec["query_text"] is None, where
        assert rec["cost"] == s.cost, f"{where}: {rec['cost']} != {s.cost}"
    fingerprints = {r["principal"]["key_fingerprint"] for r in records
                    if r["tenant"] == "contoso" and r["principal"]}
    assert len(fingerprints) == 2, f"contoso's two keys should show as two fingerprints: {fingerprints}"


def test_audit_log_holds_no_key_token_or_query_text(scraped):
    audit_records(scraped.audit_path, len(scraped.ledger))
    raw = scraped.audit_path.read_text(encoding="utf-8")
    for value in scraped.secrets:
        assert value not in raw, "a key, Authorization value, secret or token is in the audit log"
    for query in scraped.texts:
        assert query not in raw, f"query text {query[:60]!r} is in the audit log"
    assert "Basic " not in raw and "Bearer " not in raw and "authorization" not in raw.lower()


def test_audit_log_has_the_query_text_only_when_asked(kqlgate_bin, engine, tmp_path):
    key, phc = new_key(kqlgate_bin)
    audit, port = tmp_path / "audit.jsonl", free_port()
    config = "\n".join([
        "[server]", f"listen = {_toml_str(f'127.0.0.1:{port}')}", "",
        "[audit]", f"path = {_toml_str(str(audit))}", "include_query_text = true", "",
        "[clusters.main]", f"url = {_toml_str(engine.url)}", "enforce_request_properties = false", "",
        "[[tenants]]", 'id = "contoso"', f"key_hashes = [{_toml_str(phc)}]", 'cluster = "main"',
        f"database = {_toml_str(engine.guid('contoso'))}", "",
    ])
    gate = launch_kqlgate(kqlgate_bin, tmp_path, "kqlgate-query-text", config, port, dict(os.environ))
    try:
        sent = [("StormEvents | where State == 'TEXAS' | count", None, 200),
                ("StormEvents | take 1", engine.guid("fabrikam"), 403)]
        for csl, db, status in sent:
            body = {"csl": csl} if db is None else {"db": db, "csl": csl}
            resp = requests.post(gate.url + V2, json=body, headers={"Authorization": basic("contoso", key)},
                                 timeout=30)
            assert resp.status_code == status, resp.text[:500]
        records = audit_records(audit, len(sent))
        assert [(r["query_text"], r["query_hash"], r["status"]) for r in records] == [
            (csl, query_hash(csl), status) for csl, _, status in sent]
        raw = audit.read_text(encoding="utf-8")
        assert key not in raw and basic("contoso", key).split(" ", 1)[1] not in raw
    finally:
        gate.stop()


# ---------------------------------------------------------------------------
# A removed tenant's series go (last: this reloads the stack's kqlgate)
# ---------------------------------------------------------------------------


def reload_without_retired(stack: Stack) -> None:
    stack.config_path.write_text(stack.config_text(False), encoding="utf-8")
    res = run_kqlgate(stack.bin_path, "reload", "--config", str(stack.config_path), env=stack.env)
    assert res.returncode == 0, f"kqlgate reload exited {res.returncode}: {res.stdout}{res.stderr}"
    deadline = time.monotonic() + 10
    while 'tenant="retired"' in metrics_text(stack.admin_url).text:
        assert time.monotonic() < deadline, f"tenant retired's series still there:\n{_tail(stack.stderr_path)}"
        time.sleep(0.1)


def test_a_failed_reload_is_counted_and_changes_nothing(scraped):
    good = scraped.config_path.read_text(encoding="utf-8")
    before = metrics_text(scraped.admin_url).text
    assert sample_value(before, "kqlgate_config_reloads_total", result="failure") is None
    scraped.config_path.write_text(good + "\n[server.nonsense]\n", encoding="utf-8")
    try:
        pid = int((scraped.config_path.parent / "kqlgate.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sample_value(metrics_text(scraped.admin_url).text, "kqlgate_config_reloads_total",
                           result="failure") != 1:
            assert time.monotonic() < deadline, f"no failed reload counted:\n{_tail(scraped.stderr_path)}"
            time.sleep(0.1)
    finally:
        scraped.config_path.write_text(good, encoding="utf-8")
    assert 'tenant="retired"' in metrics_text(scraped.admin_url).text  # the old table stays


def test_a_removed_tenant_s_series_disappear_on_reload(scraped):
    before = metrics_text(scraped.admin_url).text
    assert 'tenant="retired"' in before and 'cluster="dead"' in before
    kept = {(name, t): sample_value(before, name, **labels)
            for t in ("contoso", "fabrikam")
            for name, labels in (("kqlgate_refusals_total", {"tenant": t, "reason": "db"}),
                                 ("kqlgate_signin_failures_total", {"tenant": t}))}
    assert all(v for v in kept.values()), kept
    reload_without_retired(scraped)
    after = metrics_text(scraped.admin_url).text
    leftovers = [line for line in after.splitlines() if 'tenant="retired"' in line or 'cluster="dead"' in line]
    assert not leftovers, leftovers
    for (name, t), value in kept.items():
        labels = {"tenant": t, "reason": "db"} if "refusals" in name else {"tenant": t}
        assert sample_value(after, name, **labels) == value, (name, t)
    # The remaining tenants still sign in (their verified keys stay), and Prometheus sees the
    # retired tenant's series go stale.
    resp = requests.post(scraped.gateway_url + V2, json={"csl": "print after_reload = 1"}, timeout=30,
                         headers={"Authorization": scraped.contoso_auth})
    assert resp.status_code == 200, resp.text[:500]
    scraped.prometheus.wait_for_scrape_after(time.time() + 0.05)
    assert scraped.prometheus.query('{__name__=~"kqlgate_.+", tenant="retired"}') == {}
    assert scraped.prometheus.query('{__name__=~"kqlgate_.+", cluster="dead"}') == {}
    assert scraped.prometheus.query('kqlgate_requests_total{tenant="contoso"}') != {}


def test_a_successful_reload_is_counted(scraped):
    """`kqlgate_config_reloads_total{result="success"}` after a reload that was taken."""
    if 'tenant="retired"' in metrics_text(scraped.admin_url).text:
        reload_without_retired(scraped)
    text = metrics_text(scraped.admin_url).text
    assert sample_value(text, "kqlgate_config_reloads_total", result="success") == 1, [
        line for line in text.splitlines() if "config_reloads" in line]


def test_series_of_a_removed_tenant_and_cluster_stay_gone_after_their_last_request(kqlgate_bin, engine, tmp_path):
    shim = Shim(engine.url).start()
    (_, h_keep), (k_gone, h_gone) = new_key(kqlgate_bin), new_key(kqlgate_bin)
    port, admin = free_port(), free_port()

    def config(gone: bool) -> str:
        lines = ["[server]", f"listen = {_toml_str(f'127.0.0.1:{port}')}", "watch_config = false",
                 f"pid_file = {_toml_str(str(tmp_path / 'kqlgate.pid'))}", "",
                 "[admin]", f"listen = {_toml_str(f'127.0.0.1:{admin}')}", "",
                 "[clusters.main]", f"url = {_toml_str(engine.url)}", "enforce_request_properties = false", "",
                 "[[tenants]]", 'id = "keep"', f"key_hashes = [{_toml_str(h_keep)}]", 'cluster = "main"',
                 f"database = {_toml_str(engine.guid('contoso'))}", ""]
        if gone:
            lines += ["[clusters.going]", f"url = {_toml_str(shim.url)}", "enforce_request_properties = false", "",
                      "[[tenants]]", 'id = "gone"', f"key_hashes = [{_toml_str(h_gone)}]", 'cluster = "going"',
                      f"database = {_toml_str(engine.guid('fabrikam'))}", ""]
        return "\n".join(lines)

    gate = launch_kqlgate(kqlgate_bin, tmp_path, "kqlgate-forget", config(True), port, dict(os.environ))
    admin_url = f"http://127.0.0.1:{admin}"
    try:
        auth = {"Authorization": basic("gone", k_gone)}
        first = requests.post(gate.url + V2, json={"csl": "print n = 1"}, headers=auth, timeout=30)
        assert first.status_code == 200, first.text[:500]  # leaves a pooled connection to `going`
        held: dict = {}
        holder = threading.Thread(target=lambda: held.update(resp=requests.post(
            gate.url + V2, json={"csl": 'print held = "__e2e_slow__"'}, headers=auth, timeout=60)), daemon=True)
        holder.start()
        deadline = time.monotonic() + 15
        while not shim.find("__e2e_slow__"):
            assert time.monotonic() < deadline, "the held request never reached the shim"
            time.sleep(0.02)
        gate.config_path.write_text(config(False), encoding="utf-8")
        res = run_kqlgate(kqlgate_bin, "reload", "--config", str(gate.config_path))
        assert res.returncode == 0, res.stdout + res.stderr
        deadline = time.monotonic() + 10
        while 'tenant="gone"' in metrics_text(admin_url).text:
            assert time.monotonic() < deadline, "the removed tenant's series never went"
            time.sleep(0.1)
        shim.release()
        holder.join(30)
        assert held["resp"].status_code == 200  # a request in flight finishes on its old snapshot
        time.sleep(0.5)
        text = metrics_text(admin_url).text
        leftovers = [line for line in text.splitlines() if 'tenant="gone"' in line or 'cluster="going"' in line]
        assert not leftovers, leftovers
    finally:
        shim.release()
        gate.stop()
        shim.stop()


def test_readme_promql_runs(scraped):
    """Every sample query in README.md's "Metrics and audit log" is one Prometheus accepts."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Metrics and audit log"):]
    block = section[section.index("```promql") + len("```promql"):]
    block = block[:block.index("```")]
    queries, current = [], ""
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            queries, current = queries + [current] * bool(current), ""
        elif line.startswith(" ") and current:
            current += " " + line.strip()
        else:
            queries, current = queries + [current] * bool(current), line.strip()
    queries += [current] * bool(current)
    assert len(queries) >= 7, queries
    for query in queries:
        scraped.prometheus.api("/api/v1/query", query=query)  # asserts status == "success"
