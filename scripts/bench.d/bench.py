#!/usr/bin/env python3
"""The engine of scripts/bench: kqlgate against nginx and a direct connection, side by side.

Started by scripts/bench (which builds, installs wrk and nginx, and cleans up on exit); stdlib
only. Everything listens on 127.0.0.1 and every load is bounded in time. See scripts/bench for
what is measured; the final table goes to stdout and to benches/RESULTS.md.

Knobs (environment): BENCH_DURATION (seconds per wrk run, default 8), BENCH_ROUNDS (3),
BENCH_CONNECTIONS (64), BENCH_THREADS (2), BENCH_STREAM_BYTES (1073741824),
BENCH_RESULTS (where to write the report, default benches/RESULTS.md; "-" for none),
BENCH_NGINX_TUNED=0 (leave out the extra nginx-2w-64k target), BENCH_QUIET_BUDGET (seconds, 180:
how long in all to wait for a machine shared with something else, such as a build, to be quiet
before a measurement; a measurement that something else disturbed is taken again once, and the
report flags what stayed disturbed), BENCH_KEEP=1 (keep the logs and configs).
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KQLGATE = os.path.join(ROOT, "target/release/kqlgate")
UPSTREAM = os.path.join(ROOT, "target/release/examples/bench_upstream")
POST_LUA = os.path.join(ROOT, "scripts/bench.d/post.lua")

TENANT = "bench"
DB_GUID = "11111111-1111-1111-1111-111111111111"
UPSTREAM_TOKEN = "bench-static-token-not-a-secret"
QUERY_PATH = "/v1/rest/query"

DURATION = int(os.environ.get("BENCH_DURATION", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
STREAM_BYTES = int(os.environ.get("BENCH_STREAM_BYTES", str(1 << 30)))
PASS_REPEAT = 10
# The nginx targets: (name, worker_processes, proxy_buffer_size). With proxy_buffering off nginx
# relays an answer through one buffer of proxy_buffer_size, by default one page (4 KiB); the extra
# target nginx-2w-64k (BENCH_NGINX_TUNED=0 leaves it out) shows nginx with 64 KiB reads, the size
# of the upstream's chunks, so the comparison does not rest on nginx's default alone.
NGINX_TARGETS = [("nginx-1w", 1, None), ("nginx-2w", 2, None)]
if os.environ.get("BENCH_NGINX_TUNED", "1") != "0":
    NGINX_TARGETS.append(("nginx-2w-64k", 2, "64k"))
SMALL, MEDIUM = 1024, 102400
MiB = 1 << 20

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct"] + [n for n, _, _ in NGINX_TARGETS] + ["kqlgate"]
# kqlgate in other configurations, in the small and medium load rounds only (A/B in one run):
# "kqlgate" itself has the admin listener (metrics) and the audit log on, as in production;
# kqlgate-bare has neither; kqlgate-redis adds the Redis limits backend (a rate and a
# concurrency limit, so each request makes both decisions in Redis).
VARIANTS = ["kqlgate-bare", "kqlgate-redis"]
LOAD_TARGETS = TARGETS + VARIANTS
KEY = [None]  # the bench key (set in main)
ADMIN_PORTS = {}  # variant -> its admin listener's port
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RATIO_TO = [n for n, _, _ in NGINX_TARGETS] + ["direct"]  # the ratio columns: kqlgate / each

WORK = None  # the scratch directory (set in main)
BINARY_INFO = ""
UPSTREAM_CPU = None  # upstream CPU seconds so far (set in main)
PIDFILE = None  # scripts/bench kills every pid listed here on exit, whatever happens to us


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_pid(pid):
    with open(PIDFILE, "a") as f:
        f.write(f"{pid}\n")


# === /proc ===


def proc_stat(pid):
    """(ppid, utime+stime ticks) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat and stat[0] == pid:
                out.append(int(entry))
    return out


def cpu_seconds(pids):
    return sum((proc_stat(p) or (0, 0))[1] for p in pids) / CLK_TCK


def machine_ticks():
    """(all, idle, steal) ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values[:8]), values[3] + values[4], values[7]


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this script, its RSS sampler included
    return usage.ru_utime + usage.ru_stime


# === HTTP helpers (all to 127.0.0.1) ===


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(port, method, path, body=None, headers=None, timeout=30):
    """One request on a fresh connection: (status, headers dict, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = {"Connection": "close"}
        if body is not None:
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        all_headers.update(headers or {})
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def query_body(csl):
    return json.dumps({"db": "Samples", "csl": csl}).encode()


def wait_for(predicate, what, timeout=15.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise BenchError(f"timed out waiting for {what}")


# === The processes ===


class Server:
    """A process we started and own; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name, argv, env=None, log_path=None):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_path or os.path.join(WORK, f"{name}.log")
        self.process = None

    def start(self):
        log_file = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        record_pid(self.process.pid)
        return self

    @property
    def pid(self):
        return self.process.pid

    def pids(self):
        return [self.pid]

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        if not self.alive():
            return
        extra = [p for p in self.pids() if p != self.pid]
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in extra:  # nginx workers normally leave with their master
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class Nginx(Server):
    recorded = frozenset()

    def pids(self):
        workers = children_of(self.pid) if self.alive() else []
        for pid in set(workers) - self.recorded:
            record_pid(pid)  # so scripts/bench can stop the workers too if we die
        self.recorded = self.recorded | set(workers)
        return [self.pid] + workers

    def workers(self):
        return [p for p in self.pids() if p != self.pid]


class Target:
    """One thing wrk and curl talk to: the upstream itself, an nginx, or kqlgate."""

    def __init__(self, name, port, server, auth):
        self.name, self.port, self.server, self.auth = name, port, server, auth
        self.url = f"http://127.0.0.1:{port}{QUERY_PATH}"

    def proxy_pids(self):
        return self.server.pids() if self.server else []

    def proxy_cpu(self):
        return cpu_seconds(self.proxy_pids())

    def rss_pids(self):
        """The processes whose memory we report: kqlgate, or nginx's workers."""
        if self.server is None:
            return []
        if isinstance(self.server, Nginx):
            return self.server.workers()
        return [self.server.pid]

    def hwm_kb(self):
        return max([proc_status_kb(p, "VmHWM") for p in self.rss_pids()] or [0])

    def rss_kb(self):
        return max([proc_status_kb(p, "VmRSS") for p in self.rss_pids()] or [0])

    def start(self):
        if self.server is None:
            return
        self.server.start()
        server = self.server

        def exited():
            if not server.alive():
                logs = [server.log_path, os.path.join(WORK, self.name, "error.log")]
                text = "".join(open(p).read()[-2000:] for p in logs if os.path.exists(p))
                raise BenchError(f"{self.name} exited at start:\n{text}")

        self.exited = exited
        if isinstance(self.server, Nginx):
            wait_for(lambda: exited() or request(self.port, "GET", "/")[0] == 401, f"{self.name} to listen")
            wait_for(lambda: len(self.server.workers()) >= 1, f"{self.name} workers")
        else:
            wait_for(lambda: exited() or request(self.port, "GET", "/readyz")[0] == 200, f"{self.name} ready")
        self.hwm_at_start = self.hwm_kb() / 1024
        self.warm()

    def warm(self):
        """One small query, so kqlgate has verified (and cached) the key before any measurement."""
        status, _, body = request(
            self.port, "POST", QUERY_PATH, query_body("bytes 1024"), self.headers()
        )
        if status != 200 or len(body) != 1024:
            raise BenchError(f"{self.name}: warm-up query got {status}, {len(body)} bytes")

    def headers(self):
        return {"Authorization": self.auth} if self.auth else {}

    def restart(self):
        if self.server is not None:
            self.server.stop()
            self.start()


def write_nginx_conf(directory, port, upstream_port, workers, password, buffer_size=None):
    os.makedirs(directory, exist_ok=True)
    # nginx's workers run as an unprivileged user (www-data): they must be able to read here.
    os.chmod(WORK, 0o755)
    os.chmod(directory, 0o755)
    sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    buffers = (f"\n            proxy_buffer_size {buffer_size};\n            proxy_buffers 8 {buffer_size};"
               if buffer_size else "")
    with open(os.path.join(directory, "htpasswd"), "w") as f:
        f.write(f"{TENANT}:{{SHA}}{sha}\n")
    os.chmod(os.path.join(directory, "htpasswd"), 0o644)
    conf = f"""# nginx as the closest equivalent of kqlgate (written by scripts/bench)
worker_processes {workers};
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {directory}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;       # kqlgate does not cap requests per client connection
    # The tenant -> database map; nginx cannot rewrite the JSON body, so it goes in a header.
    map $remote_user $tenant_db {{
        default "";
        {TENANT} "{DB_GUID}";
    }}
    # Per-tenant rate limit, set high enough never to trigger (like kqlgate's).
    limit_req_zone $remote_user zone=tenants:10m rate=1000000r/s;
    upstream kusto {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_basic "kqlgate";
            auth_basic_user_file {directory}/htpasswd;
            limit_req zone=tenants burst=1000000 nodelay;
            proxy_pass http://kusto;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {UPSTREAM_TOKEN}";
            proxy_set_header x-ms-db $tenant_db;
            proxy_set_header x-ms-user $remote_user;
            proxy_set_header x-ms-app "kqlgate;tenant=$remote_user";
            # Like kqlgate: always ask for gzip, decode for clients that do not accept it.
            proxy_set_header Accept-Encoding gzip;
            gunzip on;
            proxy_buffering off;
            proxy_request_buffering off;{buffers}
            proxy_read_timeout 300s;
        }}
    }}
}}
"""
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def kqlgate_conf(port, upstream_port, key_hash, tenants=None, variant="kqlgate"):
    observed = ""
    if variant != "kqlgate-bare" and tenants is None:
        ADMIN_PORTS[variant] = free_port()
        observed = f"""
[admin]
listen = "127.0.0.1:{ADMIN_PORTS[variant]}"

[audit]
path = "{os.path.join(WORK, variant + '-audit.jsonl')}"
"""
    if variant == "kqlgate-redis":
        observed += f"""
[limits]
backend = "redis"
redis_url = "{REDIS_URL}"
key_prefix = "kqlgate-bench:{os.getpid()}:"
"""
    head = f"""# kqlgate, equivalent to the nginx targets (written by scripts/bench)
{observed}
[server]
listen = "127.0.0.1:{port}"

[clusters.main]
url = "http://127.0.0.1:{upstream_port}"
auth = "bearer-env"
token_env = "KQLGATE_BENCH_TOKEN"
enforce_request_properties = true
pool_max_idle = 64
"""
    tenant = """
[[tenants]]
id = "{id}"
key_hashes = ["{hash}"]
cluster = "main"
database = "{db}"
aliases = ["Samples"]
rate_per_second = 1000000000.0
burst = 1000000000
max_concurrent = 100000
"""
    if tenants is None:
        return head + tenant.format(id=TENANT, hash=key_hash, db=DB_GUID)
    return head + "".join(
        tenant.format(id=f"t{i:05d}", hash=key_hash, db=f"{i:08x}-0000-4000-8000-{i:012x}")
        for i in range(tenants)
    )


def kqlgate_server(name, config_path):
    env = dict(os.environ, RUST_LOG="info", KQLGATE_BENCH_TOKEN=UPSTREAM_TOKEN)
    return Server(name, [KQLGATE, "serve", "--config", config_path], env=env)


# === Measurements ===


RELOADS = 5


def measure_reloads(server, conf_path, port, upstream_port, key_hash):
    """RELOADS reloads (SIGHUP) of the 10,000-tenant table, each with one tenant's rate changed:
    kqlgate's own reload time (its log's duration_ms), CPU and VmRSS per reload."""
    import re
    durations = []
    rss_before = proc_status_kb(server.pid, "VmRSS") / 1024
    cpu_before = cpu_seconds([server.pid])
    for n in range(RELOADS):
        text = kqlgate_conf(port, upstream_port, key_hash, tenants=10000)
        text = text.replace("rate_per_second = 1000000000.0", f"rate_per_second = {1000000000.0 + n + 1}", 1)
        with open(conf_path, "w") as f:
            f.write(text)
        os.kill(server.pid, signal.SIGHUP)

        def reloaded():
            with open(server.log_path) as f:
                return len(re.findall(r"config reloaded.*?duration_ms[=:]\s*(\d+)", f.read())) > n

        wait_for(reloaded, f"reload {n + 1} of 10,000 tenants", timeout=30, interval=0.005)
        with open(server.log_path) as f:
            durations = [int(d) for d in re.findall(r"config reloaded.*?duration_ms[=:]\s*(\d+)", f.read())]
    cpu = (cpu_seconds([server.pid]) - cpu_before) / RELOADS
    rss_after = proc_status_kb(server.pid, "VmRSS") / 1024
    status = request(port, "POST", QUERY_PATH, query_body("bytes 1024"), {"Authorization": basic("t09999", KEY[0])})[0]
    if status != 200:
        raise BenchError(f"10k tenants after {RELOADS} reloads: tenant t09999 got {status}")
    return {"reload_ms": med(durations), "reload_cpu_ms": cpu * 1000, "rss_reload_before": rss_before,
            "rss_reload_after": rss_after}


def upstream_connections(upstream_port):
    return json.loads(request(upstream_port, "GET", "/stats")[2])["connections"]


def wrk_run(target, csl, upstream, upstream_port, duration=None):
    duration = duration or DURATION
    env = dict(os.environ, BENCH_CSL=csl, BENCH_AUTH=target.auth or "")
    conns_before = upstream_connections(upstream_port)
    cpu_before, up_before = target.proxy_cpu(), upstream.cpu()
    machine_before, children_before = machine_ticks(), children_cpu()
    result = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency",
         "-s", POST_LUA, target.url],
        env=env, capture_output=True, text=True, timeout=duration + 60,
    )
    children_after, machine_after = children_cpu(), machine_ticks()
    cpu_after, up_after = target.proxy_cpu(), upstream.cpu()
    conns_after = upstream_connections(upstream_port)
    line = next((l for l in result.stdout.splitlines() if l.startswith("BENCHJSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk against {target.name} failed:\n{result.stdout}\n{result.stderr}")
    w = json.loads(line[len("BENCHJSON "):])
    requests = max(w["requests"], 1)
    seconds = w["duration_us"] / 1e6
    total, idle, steal = (a - b for a, b in zip(machine_after, machine_before))
    cores = os.cpu_count() or 1
    ours = (cpu_after - cpu_before) + (up_after - up_before) + (children_after - children_before)
    return {
        "rps": w["requests"] / seconds,
        "p50": w["p50_us"] / 1000,
        "p99": w["p99_us"] / 1000,
        "cpu_us": (cpu_after - cpu_before) * 1e6 / requests if target.server else None,
        "upstream_us": (up_after - up_before) * 1e6 / requests,
        "wrk_cpu": (children_after - children_before) / seconds * 100,
        "busy": 100.0 * (total - idle - steal) / max(total, 1),
        "steal": 100.0 * steal / max(total, 1) * cores,
        # what the machine did besides wrk, the proxy and the upstream: another build, say, or
        # kernel work charged to no process
        "others": max(0.0, 100.0 * (total - idle - steal) / max(total, 1) * cores - 100.0 * ours / seconds),
        "non2xx": w["status"],
        "sock_err": w["connect"] + w["read"] + w["write"] + w["timeout"],
        "bytes_per_req": w["bytes"] / requests,
        "new_conns": conns_after - conns_before - 1,  # the /stats call itself is one
        "requests": w["requests"],
    }


# The machine may be shared (another build, say): before each load run wait, within a budget
# for the whole benchmark, until nothing else is busy, and measure a disturbed run once more.
QUIET_BUDGET = [float(os.environ.get("BENCH_QUIET_BUDGET", "180"))]  # seconds, all waits together
DISTURBED = 25  # % of one core used by anything but wrk, the proxy and the upstream


def undisturbed(label, measure):
    """measure(), and once more after the machine is quiet again if something else disturbed it;
    the less disturbed of the two."""
    result = measure()
    if result["others"] > DISTURBED and wait_until_quiet():
        log(f"{label}: something else used {result['others']:.0f}% of a core; measuring again")
        again = measure()
        result = min(result, again, key=lambda x: x["others"])
    return result


def wait_until_quiet():
    """True when the machine is quiet (less than 15% of a core busy over half a second)."""
    announced = False
    while True:
        before = machine_ticks()
        time.sleep(0.5)
        total, idle, steal = (a - b for a, b in zip(machine_ticks(), before))
        busy = 100.0 * (total - idle - steal) / max(total, 1) * (os.cpu_count() or 1)
        if busy < 15:
            return True
        if QUIET_BUDGET[0] <= 0:
            return False
        if not announced:
            log(f"the machine is busy with something else ({busy:.0f}% of a core); waiting for it "
                f"(budget left {QUIET_BUDGET[0]:.0f} s)")
            announced = True
        time.sleep(2)
        QUIET_BUDGET[0] -= 2.5


class RssSampler(threading.Thread):
    """Samples the proxy's VmRSS every 20 ms while a transfer runs."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target, self.peak, self.stop_event = target, 0, threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.peak = max(self.peak, self.target.rss_kb())
            self.stop_event.wait(0.02)

    def finish(self):
        self.stop_event.set()
        self.join()
        self.peak = max(self.peak, self.target.rss_kb())
        return self.peak


def curl_run(target, csl, accept_gzip, expect_bytes, repeat=1):
    """An answer fetched with curl (`repeat` times in a row, summed), body to /dev/null, nothing
    decoded by curl. The proxy is restarted first, so its VmHWM is this measurement's."""
    target.restart()
    wait_until_quiet()
    hwm_start = getattr(target, "hwm_at_start", 0) if target.server else None
    hwm_before = target.hwm_kb()
    rss_before = target.rss_kb()
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", "600",
            "-w", "%{http_code} %{size_download} %{time_total}",
            "-H", "Content-Type: application/json; charset=utf-8",
            "-D", os.path.join(WORK, "curl-headers.txt"),
            "--data-binary", query_body(csl).decode(), target.url]
    if target.auth:
        argv[1:1] = ["-H", f"Authorization: {target.auth}"]
    if accept_gzip:
        argv[1:1] = ["-H", "Accept-Encoding: gzip"]
    sampler = RssSampler(target)
    sampler.start()
    cpu_before = target.proxy_cpu()
    client_before = children_cpu()
    machine_before, up_before, own_before = machine_ticks(), UPSTREAM_CPU(), own_cpu()
    started = time.monotonic()
    size = seconds = 0
    for _ in range(repeat):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=660)
        if result.returncode != 0:
            sampler.finish()
            raise BenchError(f"curl via {target.name} failed: {result.stderr.strip()}")
        status, one_size, one_seconds = result.stdout.split()
        with open(os.path.join(WORK, "curl-headers.txt")) as f:
            gzipped = "content-encoding: gzip" in f.read().lower()
        if status != "200":
            sampler.finish()
            raise BenchError(f"{target.name}: {csl} answered {status}")
        if expect_bytes is not None and int(one_size) != expect_bytes:
            sampler.finish()
            raise BenchError(f"{target.name}: {csl} gave {one_size} bytes, expected {expect_bytes}")
        size, seconds = size + int(one_size), seconds + float(one_seconds)
    client_after = children_cpu()
    cpu_after = target.proxy_cpu()
    own_after, up_after, machine_after = own_cpu(), UPSTREAM_CPU(), machine_ticks()
    wall = time.monotonic() - started
    rss_peak = sampler.finish()
    cpu = cpu_after - cpu_before
    total, idle, steal = (a - b for a, b in zip(machine_after, machine_before))
    ours = cpu + (up_after - up_before) + (client_after - client_before) + (own_after - own_before)
    others = max(0.0, 100.0 * (total - idle - steal) / max(total, 1) * (os.cpu_count() or 1)
                 - 100.0 * ours / wall)
    return {
        "size": size,
        "decoded": (expect_bytes or 0) * repeat,
        "repeat": repeat,
        "seconds": seconds,
        "mbps": size / seconds / 1e6,
        "cpu": cpu if target.server else None,
        "gzipped": gzipped,
        "hwm_start": hwm_start,
        "hwm_before": hwm_before / 1024 if target.server else None,
        "hwm": target.hwm_kb() / 1024 if target.server else None,
        "rss_peak": rss_peak / 1024 if target.server else None,
        "rss_before": rss_before / 1024 if target.server else None,
        "rss_growth": (rss_peak - rss_before) / 1024 if target.server else None,
        "client_cpu_pct": (client_after - client_before) / seconds * 100,
        "others": others,
    }


# === Checks before measuring ===


def preflight(targets, key):
    """Every target answers what it should: sizes, gzip, and refusals of bad credentials."""
    log("checks: answer sizes, gzip handling and credentials on every target")
    for t in targets.values():
        h = t.headers()
        for csl, size in (("bytes 1024", 1024), ("bytes 102400", 102400), ("stream 10485760", 10485760)):
            status, headers, body = request(t.port, "POST", QUERY_PATH, query_body(csl), h)
            if status != 200 or len(body) != size:
                raise BenchError(f"{t.name}: {csl} gave {status} with {len(body)} bytes")
        status, headers, body = request(
            t.port, "POST", QUERY_PATH, query_body("gzip-stream 10485760"),
            dict(h, **{"Accept-Encoding": "gzip"}))
        if status != 200 or headers.get("content-encoding") != "gzip":
            raise BenchError(f"{t.name}: gzip-stream with gzip accepted: {status} {headers}")
        decoded = gzip.decompress(body)
        if len(decoded) != 10485760:
            raise BenchError(f"{t.name}: gzip pass-through decodes to {len(decoded)} bytes")
        status, headers, body = request(
            t.port, "POST", QUERY_PATH, query_body("gzip-stream 10485760"), h)
        if status != 200 or "content-encoding" in headers or len(body) != 10485760:
            raise BenchError(
                f"{t.name}: gzip-stream without gzip accepted: {status}, "
                f"{headers.get('content-encoding')}, {len(body)} bytes")
        if t.server:
            for label, auth in (("wrong password", basic(TENANT, key + "x")),
                                ("unknown user", basic("nobody", key)),
                                ("no credentials", None)):
                hdrs = {"Authorization": auth} if auth else {}
                status = request(t.port, "POST", QUERY_PATH, query_body("bytes 1024"), hdrs)[0]
                if status != 401:
                    raise BenchError(f"{t.name}: {label} got {status}, expected 401")
    log("checks passed: sizes exact, gzip passed through / decoded, bad credentials get 401")


# === Formatting ===


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=None):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if digits is None:
        digits = 0 if abs(value) >= 100 else (1 if abs(value) >= 10 else 2)
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


class Report:
    def __init__(self):
        self.lines = []

    def table(self, title, header, rows):
        self.lines.append(f"\n**{title}**\n")
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")

    def text(self):
        return "\n".join(self.lines) + "\n"


def load_rows(results, metrics):
    """results[target] = list of per-round dicts; rows of medians and kqlgate's ratios."""
    rows = []
    for key, label, digits, with_ratio in metrics:
        values = {t: med([r[key] for r in results[t]]) for t in TARGETS}
        if key in ("non2xx", "sock_err"):
            values = {t: sum(r[key] for r in results[t]) for t in TARGETS}
        row = [label] + [fmt(values[t], digits) for t in TARGETS]
        k = values["kqlgate"]
        if with_ratio:
            row += [ratio(k, values[t]) for t in RATIO_TO]
        else:
            row += [""] * len(RATIO_TO)
        rows.append(row)
    return rows


LOAD_METRICS = [
    ("rps", "requests/s", 0, True),
    ("p50", "p50 latency (ms)", 2, True),
    ("p99", "p99 latency (ms)", 2, True),
    ("cpu_us", "proxy CPU µs/request", 1, True),
    ("upstream_us", "upstream CPU µs/request", 1, False),
    ("wrk_cpu", "wrk CPU (% of one core)", 0, False),
    ("busy", "machine CPU busy (% of all cores)", 0, False),
    ("others", "CPU of anything else (% of one core)", 0, False),
    ("steal", "CPU stolen by the hypervisor (% of one core)", 0, False),
    ("new_conns", "new upstream connections per round", 0, False),
    ("bytes_per_req", "bytes read per request (wrk, incl. headers)", 0, False),
    ("non2xx", "non-2xx responses (all rounds)", 0, False),
    ("sock_err", "socket errors (all rounds)", 0, False),
]


# === main ===


def main():
    global WORK, PIDFILE, KQLGATE, UPSTREAM, BINARY_INFO, UPSTREAM_CPU
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--command", default="scripts/bench")
    args = parser.parse_args()
    WORK = args.work
    PIDFILE = os.path.join(WORK, "pids")
    began = time.monotonic()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for path in (KQLGATE, UPSTREAM):
        if not os.access(path, os.X_OK):
            raise BenchError(f"{path} is missing: build it (or unset KQLGATE_BENCH_SKIP_BUILD)")
    # Run private copies, so a rebuild during the run cannot mix two versions of the binary.
    os.makedirs(os.path.join(WORK, "bin"), exist_ok=True)
    copies = []
    for path in (KQLGATE, UPSTREAM):
        copy = os.path.join(WORK, "bin", os.path.basename(path))
        shutil.copy2(path, copy)
        copies.append(copy)
    with open(copies[0], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(os.path.getmtime(KQLGATE)).strftime("%Y-%m-%d %H:%M:%S")
    BINARY_INFO = f"kqlgate binary built {built}, sha256 {digest}…"
    KQLGATE, UPSTREAM = copies

    key, key_hash = subprocess.run(
        [KQLGATE, "key", "new"], capture_output=True, text=True, check=True
    ).stdout.split("\n")[:2]
    auth = basic(TENANT, key)
    KEY[0] = key

    upstream_port = free_port()
    upstream = Server("upstream", [UPSTREAM, f"127.0.0.1:{upstream_port}"]).start()
    upstream.cpu = lambda: cpu_seconds([upstream.pid])
    UPSTREAM_CPU = upstream.cpu
    wait_for(lambda: upstream_connections(upstream_port) >= 0, "bench_upstream")

    servers = []
    try:
        targets = {"direct": Target("direct", upstream_port, None, auth)}
        for name, workers, buffer_size in NGINX_TARGETS:
            port, directory = free_port(), os.path.join(WORK, name)
            conf = write_nginx_conf(directory, port, upstream_port, workers, key, buffer_size)
            server = Nginx(name, ["nginx", "-p", directory, "-c", conf,
                                  "-e", os.path.join(directory, "error.log")])
            targets[name] = Target(name, port, server, auth)
        for variant in ["kqlgate"] + VARIANTS:
            port = free_port()
            conf_path = os.path.join(WORK, f"{variant}.toml")
            with open(conf_path, "w") as f:
                f.write(kqlgate_conf(port, upstream_port, key_hash, variant=variant))
            check = subprocess.run([KQLGATE, "check", "--config", conf_path], capture_output=True, text=True,
                                   env=dict(os.environ, KQLGATE_BENCH_TOKEN=UPSTREAM_TOKEN))
            if check.returncode != 0:
                raise BenchError(f"kqlgate check refused the bench config:\n{check.stdout}{check.stderr}")
            targets[variant] = Target(variant, port, kqlgate_server(variant, conf_path), auth)
        for t in targets.values():
            if t.server:
                servers.append(t.server)
            t.start()
        log("started: " + ", ".join(f"{n} on 127.0.0.1:{t.port}" for n, t in targets.items()))

        preflight(targets, key)
        # The Redis variant really decides in Redis (no fallback to local limits).
        metrics = request(ADMIN_PORTS["kqlgate-redis"], "GET", "/metrics")[2].decode()
        if "kqlgate_limits_backend_up 1" not in metrics or "kqlgate_limits_fallbacks_total{" in metrics:
            raise BenchError(f"kqlgate-redis does not use Redis at {REDIS_URL}:\n"
                             + "\n".join(l for l in metrics.splitlines() if "limits_" in l))

        log("warm-up: 2 s of small answers per target (not counted)")
        for name in LOAD_TARGETS:
            wrk_run(targets[name], "bytes 1024", upstream, upstream_port, duration=2)

        load = {}
        for label, size in (("small", SMALL), ("medium", MEDIUM)):
            load[label] = {t: [] for t in LOAD_TARGETS}
            for rnd in range(ROUNDS):
                for name in LOAD_TARGETS:
                    wait_until_quiet()
                    r = undisturbed(f"{label} round {rnd + 1} {name}",
                                    lambda: wrk_run(targets[name], f"bytes {size}", upstream, upstream_port))
                    load[label][name].append(r)
                    log(f"{label} round {rnd + 1} {name}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                        f"p99 {r['p99']:.2f} ms, proxy {fmt(r['cpu_us'], 1)} µs/req, wrk {r['wrk_cpu']:.0f}%, "
                        f"busy {r['busy']:.0f}%, others {r['others']:.0f}%, steal {r['steal']:.0f}%, non-2xx {r['non2xx']}, new upstream conns {r['new_conns']}")

        streams = {mode: {t: [] for t in TARGETS} for mode in ("plain", "gzip-pass", "gzip-decode")}
        # The gzip pass-through moves ~15 MB per answer, a few ms of CPU: fetched PASS_REPEAT
        # times per measurement so the 10 ms resolution of /proc/PID/stat does not dominate.
        modes = (("plain", f"stream {STREAM_BYTES}", False, 1),
                 ("gzip-pass", f"gzip-stream {STREAM_BYTES}", True, PASS_REPEAT),
                 ("gzip-decode", f"gzip-stream {STREAM_BYTES}", False, 1))
        for mode, csl, accept, repeat in modes:
            for rnd in range(ROUNDS):
                for name in TARGETS:
                    t = targets[name]
                    # pass-through: the compressed size is whatever it is; checked decoded in preflight
                    r = undisturbed(f"{mode} round {rnd + 1} {name}",
                                    lambda: curl_run(t, csl, accept, None if accept else STREAM_BYTES, repeat))
                    r["decoded"] = STREAM_BYTES * repeat
                    if r["gzipped"] != (mode == "gzip-pass"):
                        raise BenchError(f"{name} {mode}: content-encoding gzip = {r['gzipped']}")
                    streams[mode][name].append(r)
                    log(f"{mode} round {rnd + 1} {name}: {r['repeat']} × {r['size'] / r['repeat'] / MiB:.1f} MiB in "
                        f"{r['seconds']:.2f} s = {r['mbps']:.0f} MB/s, proxy CPU {fmt(r['cpu'], 2)} s, VmHWM "
                        f"{fmt(r['hwm_start'], 1)} at start, {fmt(r['hwm_before'], 1)} → {fmt(r['hwm'], 1)} MiB, "
                        f"sampled RSS peak {fmt(r['rss_peak'], 1)} MiB, curl {r['client_cpu_pct']:.0f}%, others {r['others']:.0f}%")

        sizes = {}
        for rnd in range(ROUNDS):
            for size in (100 * MiB, 1 << 30, 4 << 30):
                r = undisturbed(f"kqlgate stream {size / MiB:.0f} MiB round {rnd + 1}",
                                lambda: curl_run(targets["kqlgate"], f"stream {size}", False, size))
                sizes.setdefault(size, []).append(r)
                log(f"kqlgate stream {size / MiB:.0f} MiB round {rnd + 1}: {r['mbps']:.0f} MB/s, VmHWM "
                    f"{r['hwm_start']:.1f} at start, {r['hwm_before']:.1f} → {r['hwm']:.1f} MiB, VmRSS "
                    f"{r['rss_before']:.1f} before, sampled peak {r['rss_peak']:.1f} MiB")

        for t in targets.values():
            if t.server:
                t.server.stop()

        log("kqlgate with 10,000 tenants: start-up and RSS")
        many = []
        many_conf = os.path.join(WORK, "kqlgate-10k.toml")
        for rnd in range(ROUNDS):
            port = free_port()
            with open(many_conf, "w") as f:
                f.write(kqlgate_conf(port, upstream_port, key_hash, tenants=10000))
            server = kqlgate_server(f"kqlgate-10k-{rnd + 1}", many_conf)
            servers.append(server)
            server.start()

            def listening():
                if server.process.poll() is not None:
                    raise BenchError(f"kqlgate (10k tenants) exited: see {server.log_path}")
                with open(server.log_path) as f:
                    return "kqlgate listening" in f.read()

            wait_for(listening, "kqlgate (10k tenants) to log 'kqlgate listening'", interval=0.002)
            t_listen = time.monotonic() - server.started_at
            wait_for(lambda: request(port, "GET", "/readyz")[0] == 200, "kqlgate (10k) /readyz", interval=0.002)
            t_ready = time.monotonic() - server.started_at
            rss = proc_status_kb(server.pid, "VmRSS") / 1024
            hwm = proc_status_kb(server.pid, "VmHWM") / 1024
            status, _, body = request(port, "POST", QUERY_PATH, query_body("bytes 1024"),
                                      {"Authorization": basic("t09999", key)})
            if status != 200 or len(body) != 1024:
                raise BenchError(f"10k tenants: tenant t09999 got {status}")
            reloads = measure_reloads(server, many_conf, port, upstream_port, key_hash)
            server.stop()
            many.append({"listen": t_listen, "ready": t_ready, "rss": rss, "hwm": hwm, **reloads})
            log(f"10k tenants round {rnd + 1}: 'listening' after {t_listen * 1000:.0f} ms, /readyz after "
                f"{t_ready * 1000:.0f} ms, RSS {rss:.1f} MiB (HWM {hwm:.1f}) before the first request")
    finally:
        for server in servers:
            server.stop()
        upstream.stop()

    elapsed = time.monotonic() - began
    report = build_report(load, streams, sizes, many, elapsed)
    print(report)
    results_path = os.environ.get("BENCH_RESULTS", os.path.join(ROOT, "benches/RESULTS.md"))
    if results_path != "-":
        with open(results_path, "w") as f:
            f.write(results_document(report, args.command, elapsed))
            # The profile's reading of the gaps is written by hand, kept beside the figures.
            analysis = os.path.join(ROOT, "benches/ANALYSIS.md")
            if os.path.exists(analysis):
                with open(analysis) as notes:
                    f.write("\n" + notes.read())
        log(f"wrote {os.path.relpath(results_path, ROOT)}")


def build_report(load, streams, sizes, many, elapsed):
    r = Report()
    cols = ["", *TARGETS, *(f"kqlgate/{t}" for t in RATIO_TO)]
    for label, size in (("small", SMALL), ("medium", MEDIUM)):
        r.table(f"{label.capitalize()} answers (`bytes {size}`), wrk -t{THREADS} -c{CONNECTIONS} "
                f"-d{DURATION}s, median of {ROUNDS} rounds", cols, load_rows(load[label], LOAD_METRICS))
        disturbed = max(x["others"] for runs in load[label].values() for x in runs)
        if disturbed > DISTURBED:
            r.lines.append(f"\n⚠ Something else used up to {disturbed:.0f}% of a core during these runs "
                           f"(another build?): these numbers are disturbed; run again on a quiet machine.")

    variants = ["kqlgate-bare", "kqlgate", "kqlgate-redis"]
    for label, size in (("small", SMALL), ("medium", MEDIUM)):
        rows = []
        for key, name, digits, _ in LOAD_METRICS[:4]:
            values = {t: med([x[key] for x in load[label][t]]) for t in variants}
            rows.append([name] + [fmt(values[t], digits) for t in variants]
                        + [ratio(values["kqlgate"], values["kqlgate-bare"]),
                           ratio(values["kqlgate-redis"], values["kqlgate"])])
        r.table(f"{label.capitalize()} answers, kqlgate A/B in the same run: bare (no metrics, no audit), "
                f"with metrics + audit log (the `kqlgate` column above), and with the Redis limits backend "
                f"too (rate + lease in Redis per request)",
                ["", *variants, "metrics+audit / bare", "redis / local"], rows)

    gb = 1e9
    rows = []

    def cpu_per_gb(x, nbytes):
        return None if x["cpu"] is None else x["cpu"] / (nbytes / gb)
    def srow(label, mode, fn, digits, with_ratio=True):
        values = {t: med([fn(x) for x in streams[mode][t]]) for t in TARGETS}
        row = [label] + [fmt(values[t], digits) for t in TARGETS]
        k = values["kqlgate"]
        row += [ratio(k, values[t]) for t in RATIO_TO] if with_ratio else [""] * len(RATIO_TO)
        rows.append(row)
        return values
    s = {}
    s["mbps"] = srow("plain: MB/s", "plain", lambda x: x["mbps"], 0)
    s["cpu"] = srow("plain: proxy CPU s/GB", "plain", lambda x: cpu_per_gb(x, x["size"]), 2)
    s["hwm"] = srow("plain: proxy peak RSS (VmHWM) MiB", "plain", lambda x: x["hwm"], 1)
    srow("plain: … VmHWM at start, before any request, MiB", "plain", lambda x: x["hwm_start"], 1, False)
    srow("plain: … VmHWM before the answer (after start + one small query) MiB", "plain", lambda x: x["hwm_before"], 1, False)
    srow("plain: … VmRSS sampled during the answer, max MiB", "plain", lambda x: x["rss_peak"], 1)
    srow("plain: curl CPU (% of one core)", "plain", lambda x: x["client_cpu_pct"], 0, False)
    s["pass_mbps"] = srow("gzip pass-through: received MB/s (compressed bytes)", "gzip-pass", lambda x: x["mbps"], 0)
    srow("gzip pass-through: received MB per answer", "gzip-pass", lambda x: x["size"] / x["repeat"] / 1e6, 2, False)
    s["pass_cpu"] = srow("gzip pass-through: proxy CPU s per GB of decoded answer", "gzip-pass",
                         lambda x: cpu_per_gb(x, x["decoded"]), 3)
    srow("gzip pass-through: proxy CPU s per GB received", "gzip-pass",
         lambda x: cpu_per_gb(x, x["size"]), 2)
    s["dec_mbps"] = srow("gzip decoded on the fly: MB/s of decoded output", "gzip-decode", lambda x: x["mbps"], 0)
    s["dec_cpu"] = srow("gzip decoded on the fly: proxy CPU s/GB decoded", "gzip-decode",
                        lambda x: cpu_per_gb(x, x["size"]), 2)
    srow("gzip decoded on the fly: proxy peak RSS (VmHWM) MiB", "gzip-decode", lambda x: x["hwm"], 1)
    disturbed = max(x["others"] for runs in streams.values() for t in runs.values() for x in t)
    disturbed = max([disturbed] + [x["others"] for runs in sizes.values() for x in runs])
    r.table(f"One {STREAM_BYTES / MiB:.0f} MiB answer through curl, proxy restarted before each, median of "
            f"{ROUNDS} (gzip pass-through: {PASS_REPEAT} answers in a row per measurement; direct, gzip "
            f"decoded: the upstream itself sends plain bytes to a client that does not accept gzip)", cols, rows)

    if disturbed > DISTURBED:
        r.lines.append(f"\n⚠ Something else used up to {disturbed:.0f}% of a core during these transfers "
                       f"(another build?): these numbers are disturbed; run again on a quiet machine.")
    rows = []
    for size in sorted(sizes):
        runs = sizes[size]
        rows.append([f"{size / MiB:,.0f} MiB", fmt(med([x["mbps"] for x in runs]), 0),
                     fmt(med([x["cpu"] / (x["size"] / gb) for x in runs]), 2),
                     fmt(med([x["hwm_start"] for x in runs]), 1),
                     fmt(med([x["rss_before"] for x in runs]), 1), fmt(med([x["rss_peak"] for x in runs]), 1),
                     fmt(med([x["rss_growth"] for x in runs]), 1), fmt(max(x["rss_growth"] for x in runs), 1),
                     fmt(med([x["hwm"] for x in runs]), 1), fmt(max(x["hwm"] for x in runs), 1)])
    r.table(f"kqlgate only, plain `stream N`, restarted before each, median of {ROUNDS} (VmRSS sampled "
            f"every 20 ms; 'before' is after start-up and one key check)",
            ["answer", "MB/s", "CPU s/GB", "VmHWM at start (MiB)", "VmRSS before the answer (MiB)",
             "VmRSS peak during (MiB)", "growth during (MiB)", "growth, max of rounds (MiB)",
             "VmHWM after (MiB)", "VmHWM after, max of rounds (MiB)"], rows)

    r.table(f"kqlgate with 10,000 tenants (one shared key hash), median of {ROUNDS} starts; then "
            f"{RELOADS} reloads (SIGHUP, one tenant's rate changed each time)",
            ["start → 'kqlgate listening' (ms)", "start → /readyz 200 (ms)", "VmRSS before first request (MiB)",
             "VmHWM (MiB)", "reload: kqlgate's duration_ms", "reload: CPU ms", "VmRSS before → after the reloads (MiB)"],
            [[fmt(med([m["listen"] for m in many]) * 1000, 0), fmt(med([m["ready"] for m in many]) * 1000, 0),
              fmt(med([m["rss"] for m in many]), 1), fmt(med([m["hwm"] for m in many]), 1),
              fmt(med([m["reload_ms"] for m in many]), 0), fmt(med([m["reload_cpu_ms"] for m in many]), 0),
              f"{med([m['rss_reload_before'] for m in many]):.1f} → {med([m['rss_reload_after'] for m in many]):.1f}"]])

    r.lines.append("\n## Targets\n")
    r.lines.extend(targets_section(load, streams, sizes, many, s))
    r.lines.append(f"\n(whole run: {elapsed / 60:.1f} min)")
    return r.text()


def targets_section(load, streams, sizes, many, s):
    out = []

    def mark(ok):
        return "**met**" if ok else "**not met**"

    def vs_nginx(label, values, factor, higher_better, unit, digits):
        """Judged against nginx-1w and nginx-2w (the configuration the targets name); the tuned
        nginx, when measured, is shown beside it."""
        kq = values["kqlgate"]

        def ok(n):
            return kq >= factor * n if higher_better else kq <= factor * n

        ok1, ok2 = ok(values["nginx-1w"]), ok(values["nginx-2w"])
        detail = f"kqlgate {fmt(kq, digits)} {unit} vs " + ", ".join(
            f"{t} {fmt(values[t], digits)} ({kq / values[t]:.2f}×)" for t in ("nginx-1w", "nginx-2w"))
        verdict = mark(ok1 and ok2) if ok1 == ok2 else f"**met vs {'nginx-1w' if ok1 else 'nginx-2w'} only**"
        if "nginx-2w-64k" in values:
            n = values["nginx-2w-64k"]
            detail += (f"; against nginx-2w-64k {fmt(n, digits)} ({kq / n:.2f}×) it would be "
                       f"{'met' if ok(n) else 'NOT met'}")
        out.append(f"- {label}: {verdict} — {detail}")

    def m(label, key):
        return {t: med([x[key] for x in load[label][t]]) for t in TARGETS}

    small_cpu, small_rps, small_p99 = m("small", "cpu_us"), m("small", "rps"), m("small", "p99")
    vs_nginx("small: CPU/request ≤ 0.8× nginx", small_cpu, 0.8, False, "µs", 1)
    vs_nginx("small: requests/s ≥ 1.2× nginx", small_rps, 1.2, True, "req/s", 0)
    vs_nginx("small: p99 ≤ nginx", small_p99, 1.0, False, "ms", 2)
    med_rps, med_cpu = m("medium", "rps"), m("medium", "cpu_us")
    vs_nginx("medium: requests/s ≥ nginx", med_rps, 1.0, True, "req/s", 0)
    vs_nginx("medium: CPU/request ≤ nginx", med_cpu, 1.0, False, "µs", 1)
    vs_nginx("1 GiB stream: MB/s ≥ nginx", s["mbps"], 1.0, True, "MB/s", 0)
    vs_nginx("1 GiB stream: CPU/GB ≤ nginx", s["cpu"], 1.0, False, "s/GB", 2)

    hwm_by_size = {size: max(x["hwm"] for x in runs) for size, runs in sizes.items()}
    rss_by_size = {size: max(x["rss_peak"] for x in runs) for size, runs in sizes.items()}
    base = med([x["hwm_before"] for runs in sizes.values() for x in runs])
    at_start = med([x["hwm_start"] for runs in sizes.values() for x in runs])
    peak = max(hwm_by_size.values())
    sizes_text = ", ".join(f"{size / MiB:,.0f} MiB: {hwm_by_size[size]:.1f}" for size in sorted(sizes))
    plain_hwm = max(x["hwm"] for x in streams["plain"]["kqlgate"])
    peak = max(peak, plain_hwm)
    out.append(f"- stream: peak RSS ≤ 32 MiB: {mark(peak <= 32)} — VmHWM max {peak:.1f} MiB over all plain "
               f"answers ({sizes_text} MiB; 1 GiB comparison runs: {plain_hwm:.1f} MiB); "
               f"VmHWM at start, before any request, {at_start:.1f} MiB; before the answer (after one key "
               f"check) {base:.1f} MiB; VmRSS sampled "
               f"during the answers at most {max(rss_by_size.values()):.1f} MiB")
    growth = {size: max(x["rss_growth"] for x in runs) for size, runs in sizes.items()}
    flat = max(growth.values()) <= 8
    growth_text = ", ".join(f"{size / MiB:,.0f} MiB: +{growth[size]:.1f}" for size in sorted(sizes))
    out.append(f"- stream: RSS flat across 100 MiB / 1 GiB / 4 GiB (VmRSS growth during the answer ≤ 8 MiB "
               f"for every size in every round; it moves in 2 MiB steps): {mark(flat)} — worst "
               f"{growth_text} MiB "
               f"(VmHWM after: {sizes_text} MiB — VmHWM also holds start-up's and the key check's argon2 "
               f"memory, so it varies with the allocator more than with the answer)")
    pass_cpu, plain_cpu = s["pass_cpu"]["kqlgate"], s["cpu"]["kqlgate"]
    wire = med([x["cpu"] / (x["size"] / 1e9) for x in streams["gzip-pass"]["kqlgate"]])
    # both per GB of the decoded answer: the same 1 GiB of rows either way
    out.append(f"- gzip pass-through CPU/GB ≤ plain streaming: {mark(pass_cpu <= plain_cpu)} — "
               f"{pass_cpu:.3f} s per GB of decoded answer vs {plain_cpu:.2f} s/GB plain "
               f"(per GB actually received, compressed: {wire:.2f} s/GB)")
    dec = s["dec_mbps"]["kqlgate"]
    out.append(f"- on-the-fly decompression ≥ 500 MB/s decoded: {mark(dec >= 500)} — {dec:.0f} MB/s "
               "(nginx gunzip: " + ", ".join(f"{t} {s['dec_mbps'][t]:.0f}" for t in RATIO_TO[:-1]) + ")")
    start = med([x["listen"] for x in many])
    rss = med([x["rss"] for x in many])
    out.append(f"- 10,000 tenants: start-up < 1 s: {mark(start < 1)} — {start * 1000:.0f} ms to 'kqlgate listening'")
    out.append(f"- 10,000 tenants: RSS < 64 MiB: {mark(rss < 64)} — {rss:.1f} MiB before the first request")
    return out


def results_document(report, command, elapsed):
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock", "examples"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"""# kqlgate load benchmark

Written by `scripts/bench` — kqlgate against nginx (1 and 2 workers, and 2 workers with 64 KiB
proxy buffers) and a direct connection to
the same fast fake upstream (`examples/bench_upstream.rs`), everything on 127.0.0.1 of one machine,
so the load generator, the proxy and the upstream share its cores.

- date: {datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
- machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {model}, {mem_kb / 1024 / 1024:.1f} GiB memory, {platform.system()} {platform.release()}
- code: commit {commit}{" with uncommitted changes in src/examples" if dirty else ""}; {BINARY_INFO}
- tools: {wrk_version.strip()}; {nginx_version}; curl
- command: `{command}` ({elapsed / 60:.1f} min)

How to read it: requests/s and latency come from wrk (`scripts/bench.d/post.lua`, which posts a
Basic-auth Kusto body). Proxy CPU is utime+stime of all the proxy's processes (nginx: master and
workers) from /proc/PID/stat, just before and after each run, divided by the requests or the
bytes. MB = 10^6 bytes, GB = 10^9 bytes. Ratios are kqlgate divided by the other target (for
requests/s and MB/s higher is better, for latency, CPU and RSS lower is better). The 1 GiB answers
are fetched by curl without `--compressed` (body to /dev/null), the proxy restarted before each so
VmHWM is this answer's; VmHWM includes start-up and the first key check (argon2id with the
memory cost of `kqlgate key new`, 7 MiB), which
the "before" row shows.

nginx is configured as the closest equivalent of kqlgate: `auth_basic` with a `{{SHA}}` htpasswd
file, `map $remote_user` → the tenant's database (sent as `x-ms-db`, nginx cannot rewrite the JSON
body), `limit_req_zone $remote_user` set never to trigger, an `upstream` with `keepalive 64`,
`proxy_http_version 1.1`, `proxy_set_header Connection ""`, `proxy_buffering off`,
`proxy_request_buffering off`, the client's Authorization replaced by a static Bearer token,
`Accept-Encoding: gzip` to the upstream with `gunzip on` for clients that do not accept gzip, an
access log file, and `keepalive_requests 1000000` (client side and upstream side; nginx's default
of 1000 would close connections that kqlgate keeps). `nginx-2w-64k` is the same with
`proxy_buffer_size 64k` and `proxy_buffers 8 64k`: with buffering off, nginx relays an answer
through one buffer of `proxy_buffer_size`, by default a single 4 KiB page, which is most of its
cost on large answers; the targets are judged against the default (`nginx-1w`, `nginx-2w`) as
they were set, and the tuned nginx is shown beside them. kqlgate: one tenant with a Basic key and
rate/burst never reached, cluster `auth = "bearer-env"`, `enforce_request_properties = true`,
RUST_LOG=info with its log to a file, `workers` left at its default (one per CPU, like nginx's
`worker_processes auto`).
{report}"""


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        log(f"FAILED: {error}")
        sys.exit(1)
