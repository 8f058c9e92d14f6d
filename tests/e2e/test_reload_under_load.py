"""Live reloads under load, through the real engine: 64 connections of steady queries for
E2E_RELOAD_SECONDS (60 by default) while 20 reloads add and remove tenants, rotate and revoke
keys and change limits. The tenants that stay never see a failed request or a connection
error; a removed key is refused from the next request, a rotated one works from the next."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from conftest import _stop, _toml_str, basic, free_port, new_key  # noqa: F401

CONNECTIONS = 64
RELOADS = 20
SECONDS = float(os.environ.get("E2E_RELOAD_SECONDS", "60"))


class Config:
    """The config file the test rewrites: tenant id -> (database, [hashes], extra lines)."""

    def __init__(self, path: Path, listen: str, engine_url: str):
        self.path, self.listen, self.engine_url = path, listen, engine_url
        self.tenants: dict[str, tuple[str, list[str], list[str]]] = {}

    def write(self) -> None:
        lines = ["[server]", f"listen = {_toml_str(self.listen)}", "",
                 "[clusters.main]", f"url = {_toml_str(self.engine_url)}",
                 "enforce_request_properties = false", ""]
        for tenant, (database, hashes, extra) in self.tenants.items():
            lines += ["[[tenants]]", f"id = {_toml_str(tenant)}",
                      "key_hashes = [" + ", ".join(_toml_str(h) for h in hashes) + "]",
                      'cluster = "main"', f"database = {_toml_str(database)}", *extra, ""]
        temporary = self.path.with_suffix(".next")
        temporary.write_text("\n".join(lines), encoding="utf-8")
        temporary.replace(self.path)


def test_twenty_reloads_under_load_fail_no_request(kqlgate_bin, engine, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    # Keys made up front, so each reload step is quick: two steady ones, one per new tenant,
    # one per rotation.
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: new_key(kqlgate_bin), range(2 + RELOADS + RELOADS // 2)))
    keys = {"steady-a": made.pop(), "steady-b": made.pop()}
    config = Config(tmp_path / "kqlgate.toml", f"127.0.0.1:{free_port()}", engine.url)
    for name, database in (("steady-a", engine.guid("contoso")), ("steady-b", engine.guid("fabrikam"))):
        config.tenants[name] = (database, [keys[name][1]], ["rate_per_second = 100000.0", "max_concurrent = 200"])
    config.write()
    stderr = tmp_path / "kqlgate.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess_serve(kqlgate_bin, config.path, err)
    url = "http://" + config.listen
    try:
        wait_ready(url, proc, stderr)
        stop = threading.Event()
        outcomes: Counter = Counter()
        lock = threading.Lock()

        def steady(index: int) -> None:
            tenant = ("steady-a", "steady-b")[index % 2]
            session = requests.Session()
            while not stop.is_set():
                try:
                    resp = session.post(url + "/v1/rest/query", timeout=30,
                                        headers={"Authorization": basic(tenant, keys[tenant][0])},
                                        json={"csl": "StormEvents | take 3"})
                    outcome = resp.status_code
                except requests.RequestException as exc:
                    outcome = f"connection error: {type(exc).__name__}"
                with lock:
                    outcomes[outcome] += 1

        workers = [threading.Thread(target=steady, args=(i,), daemon=True) for i in range(CONNECTIONS)]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        churn_key = None
        for step in range(RELOADS):
            time.sleep(max(0.0, started + SECONDS * (step + 1) / (RELOADS + 1) - time.monotonic()))
            previous = churn_key
            churn_key = made.pop()
            config.tenants.pop(f"churn-{step - 1}", None)
            config.tenants[f"churn-{step}"] = (engine.guid("fabrikam"), [churn_key[1]], [])
            # steady-a: every other reload adds a key, the next revokes the older one.
            database, hashes, extra = config.tenants["steady-a"]
            rotated = None
            if step % 2 == 0:
                rotated = made.pop()
                hashes = [*hashes, rotated[1]]
            else:
                hashes = hashes[-1:]
            config.tenants["steady-a"] = (database, hashes, extra)
            # steady-b: its limits change on every reload (never low enough to refuse it).
            database, hashes_b, _ = config.tenants["steady-b"]
            config.tenants["steady-b"] = (database, hashes_b,
                                          [f"rate_per_second = {100000 + step}.0", f"max_concurrent = {200 + step}"])
            reloads_before = log(stderr).count("config reloaded")
            config.write()
            wait_for(lambda: log(stderr).count("config reloaded") > reloads_before, f"reload {step}", stderr)
            # From the next request: the new tenant's key works, the removed one's is refused.
            assert query(url, f"churn-{step}", churn_key[0]) == 200
            if previous is not None:
                assert query(url, f"churn-{step - 1}", previous[0]) == 401
            if rotated is not None:
                assert query(url, "steady-a", rotated[0]) == 200
                keys["steady-a"] = rotated  # the steady workers pick the new key up as they go
            elif step > 0:
                assert query(url, "steady-a", keys["steady-a"][0]) == 200
        time.sleep(max(0.0, started + SECONDS - time.monotonic()))
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        print(f"\nreload under load: {RELOADS} reloads in {SECONDS:.0f} s; outcomes {dict(outcomes)}; "
              f"reload log: {reload_figures(stderr)}")
        assert set(outcomes) == {200}, dict(outcomes)
        assert outcomes[200] > CONNECTIONS * 10, dict(outcomes)
    finally:
        _stop(proc)


def subprocess_serve(kqlgate_bin, path: Path, err):
    import subprocess
    env = {**os.environ, "RUST_LOG": "info"}
    return subprocess.Popen([str(kqlgate_bin), "serve", "--log-format", "json", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)


def wait_ready(url: str, proc, stderr: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log(stderr)
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready:\n{log(stderr)}")


def wait_for(condition, what: str, stderr: Path, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {limit} s\n{log(stderr)[-3000:]}"
        time.sleep(0.05)


def query(url: str, tenant: str, key: str) -> int:
    return requests.post(url + "/v1/rest/query", headers={"Authorization": basic(tenant, key)},
                         json={"csl": "print 1"}, timeout=30).status_code


def log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def reload_figures(stderr: Path) -> str:
    import json
    durations = [json.loads(line)["duration_ms"] for line in log(stderr).splitlines()
                 if '"config reloaded"' in line]
    return f"{len(durations)} reloads, {min(durations)}–{max(durations)} ms" if durations else "none"
