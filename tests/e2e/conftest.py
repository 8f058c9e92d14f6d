"""End-to-end fixtures: a real KQL engine (duckdb-kql serve), the real kqlgate binary.

Run (from the repo root):

    scripts/python-env
    KQLGATE_BIN=target/debug/kqlgate .venv/bin/python -m pytest tests/e2e -v

Session-scoped, in order: sample databases (one DuckDB file per tenant, named by
its GUID) -> `duckdb-kql serve` on a free port -> a recording gzip shim in front
of it (see upstream_shim.py) -> keys from `kqlgate key new` -> a config file ->
`kqlgate check --config` (must exit 0) -> `kqlgate serve --config` -> /readyz.

A missing kqlgate binary is a failure, never a skip. When a test fails, the tail
of kqlgate's stderr is attached to its report.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
sys.path.insert(0, str(E2E_DIR))

import sample_data  # noqa: E402
from upstream_shim import Shim  # noqa: E402

LEGACY_CLIENT = Path(os.environ.get("KQLGATE_LEGACY_CLIENT", REPO_ROOT.parent / "shared" / "examples" / "legacy_client.py"))
UPSTREAM_TOKEN_ENV = "KQLGATE_E2E_UPSTREAM_TOKEN"
MAX_BODY_BYTES = 256 * 1024

# Tenant id -> settings. Every tenant owns its own database (sample_data.DATASETS).
TENANTS = {
    "contoso": {"cluster": "main", "aliases": ["Samples"], "max_concurrent": 4},
    "fabrikam": {"cluster": "main", "aliases": ["Fabrikam"]},
    "throttled-sdk": {"cluster": "main", "rate_per_second": 0.001, "burst": 1},
    "throttled-http": {"cluster": "main", "rate_per_second": 0.001, "burst": 1},
    "gzipped": {"cluster": "shim", "max_concurrent": 1},
    "bearer": {"cluster": "shim_bearer"},
    # test_guard.py: may manage its own database (role = "admin").
    "northwind": {"cluster": "main", "aliases": ["Northwind"], "role": "admin"},
    # test_guard.py: on a restrict_statement cluster, behind the recording shim.
    "restricted": {"cluster": "restricted", "aliases": ["Restricted"]},
}

# What the engine is told, so that the guard's refusals can be shown to matter
# (test_guard.py): each of these really resolves to fabrikam's database.
# cluster("othercluster").database(<fabrikam or contoso GUID>) -> fabrikam's database.
OTHER_CLUSTER = "othercluster"
# macro-expand FabrikamGroup as X (X.StormEvents) -> fabrikam's StormEvents.
ENTITY_GROUP = "FabrikamGroup"
# Stored functions, callable from any database.
STORED_FUNCTIONS = """\
function TexasEvents() { StormEvents | where State == 'TEXAS' }
function EventsIn(s:string) { StormEvents | where State == s }
"""

# Filled in as fixtures come up, read by the report hook.
_STATE: dict[str, Path] = {}


def _tail(path: Path, limit: int = 8000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return text[-limit:] if len(text) > limit else text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, limit in (("kqlgate stderr", 8000), ("duckdb-kql serve output", 1500)):
            if name in _STATE:
                report.sections.append((f"{name} (tail)", _tail(_STATE[name], limit)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(tenant: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{tenant}:{key}".encode()).decode()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


@dataclass
class Engine:
    url: str
    datasets: dict[str, sample_data.Dataset]

    def guid(self, tenant: str) -> str:
        return self.datasets[tenant].guid

    def post(self, path: str, db: str | None, csl: str, **kw) -> requests.Response:
        body = {"csl": csl} if db is None else {"db": db, "csl": csl}
        return requests.post(self.url + path, json=body, timeout=60, **kw)


def _duckdb_kql() -> str:
    candidate = Path(sys.executable).parent / "duckdb-kql"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("duckdb-kql")
    if not found:
        pytest.fail("duckdb-kql not found next to the interpreter or on PATH; run scripts/python-env")
    return found


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Engine:
    data_dir = tmp_path_factory.mktemp("engine")
    main_db, init = sample_data.build(data_dir, list(TENANTS))  # contoso first = main database
    contoso, fabrikam = (sample_data.DATASETS[t].guid for t in ("contoso", "fabrikam"))
    cluster_map = data_dir / "cluster-map.json"
    cluster_map.write_text(json.dumps({OTHER_CLUSTER: {fabrikam: fabrikam, contoso: fabrikam}}), encoding="utf-8")
    entity_groups = data_dir / "entity-groups.json"
    entity_groups.write_text(json.dumps({ENTITY_GROUP: [f"database('{fabrikam}')"]}), encoding="utf-8")
    functions = data_dir / "functions.kql"
    functions.write_text(STORED_FUNCTIONS, encoding="utf-8")
    port = free_port()
    log = data_dir / "duckdb-kql.log"
    _STATE["duckdb-kql serve output"] = log
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_duckdb_kql(), "serve", str(main_db), "--init", str(init), "-p", str(port),
             "--cluster-map", str(cluster_map), "--entity-groups", str(entity_groups),
             "--functions", str(functions)],
            stdout=out, stderr=subprocess.STDOUT, cwd=data_dir,
        )
    url = f"http://127.0.0.1:{port}"
    eng = Engine(url, {name: sample_data.DATASETS[name] for name in TENANTS})
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"duckdb-kql serve exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if eng.post("/v1/rest/query", eng.guid("contoso"), "print ok = 1").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"duckdb-kql serve did not answer within 60s:\n{_tail(log)}")
            time.sleep(0.2)
        yield eng
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def shim(engine) -> Shim:
    s = Shim(engine.url).start()
    yield s
    s.stop()


# ---------------------------------------------------------------------------
# kqlgate
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kqlgate_bin() -> Path:
    raw = os.environ.get("KQLGATE_BIN", "target/debug/kqlgate")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"kqlgate binary not found or not executable at {path} (KQLGATE_BIN={raw!r}). "
            "Build it (cargo build) or point KQLGATE_BIN at it. The e2e suite never skips.",
            pytrace=False,
        )
    return path


def run_kqlgate(bin_path: Path, *args: str, stdin: str | None = None, timeout: float = 60,
                env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_path), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env)


def new_key(bin_path: Path) -> tuple[str, str]:
    """`kqlgate key new` -> (key, PHC hash)."""
    res = run_kqlgate(bin_path, "key", "new")
    assert res.returncode == 0, f"`kqlgate key new` exited {res.returncode}: {res.stderr}"
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2, f"`kqlgate key new` printed {res.stdout!r}; expected key then hash"
    key, phc = lines[0], lines[1]
    assert phc.startswith("$argon2id$"), f"second line is not an argon2id PHC string: {phc!r}"
    assert len(key) >= 16 and key not in phc, f"implausible key {key!r}"
    return key, phc


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Gateway:
    url: str
    config_path: Path
    stderr_path: Path
    keys: dict[str, str]  # tenant -> a valid key
    extra_keys: dict[str, str]  # tenant -> a second valid key (hash made by argon2-cffi)
    guids: dict[str, str]
    upstream_token: str
    bin_path: Path
    env: dict[str, str] = field(repr=False)
    shim: Shim = field(repr=False)

    def auth(self, tenant: str, key: str | None = None) -> dict[str, str]:
        return {"Authorization": basic(tenant, key if key is not None else self.keys[tenant])}

    def post(self, path: str, body, tenant: str = "contoso", key: str | None = None,
             headers: dict | None = None, **kw) -> requests.Response:
        h = {"Accept": "application/json", **self.auth(tenant, key), **(headers or {})}
        if isinstance(body, (bytes, str)):
            return requests.post(self.url + path, data=body, headers=h, timeout=60, **kw)
        return requests.post(self.url + path, json=body, headers=h, timeout=60, **kw)


def write_config(path: Path, listen: str, engine_url: str, shim_url: str,
                 hashes: dict[str, list[str]], guids: dict[str, str]) -> None:
    lines = [
        "# Written by tests/e2e/conftest.py",
        "[server]",
        f"listen = {_toml_str(listen)}",
        f"max_body_bytes = {MAX_BODY_BYTES}",
        "",
        "[clusters.main]",
        f"url = {_toml_str(engine_url)}",
        'auth = "none"',
        "timeout_seconds = 60",
        "# the local engine refuses some of the forced request options; the guard holds alone",
        "enforce_request_properties = false",
        "",
        "[clusters.shim]",
        f"url = {_toml_str(shim_url)}",
        'auth = "none"',
        "timeout_seconds = 60",
        "enforce_request_properties = false",
        "",
        "[clusters.shim_bearer]",
        f"url = {_toml_str(shim_url)}",
        'auth = "bearer-env"',
        f"token_env = {_toml_str(UPSTREAM_TOKEN_ENV)}",
        "timeout_seconds = 60",
        "enforce_request_properties = false",
        "",
        "# Kusto's own `restrict access to` prefix on every query; behind the shim, which records it.",
        "[clusters.restricted]",
        f"url = {_toml_str(shim_url)}",
        'auth = "none"',
        "timeout_seconds = 60",
        "enforce_request_properties = false",
        "restrict_statement = true",
        "",
    ]
    for tenant, settings in TENANTS.items():
        lines += [
            "[[tenants]]",
            f"id = {_toml_str(tenant)}",
            "key_hashes = [" + ", ".join(_toml_str(h) for h in hashes[tenant]) + "]",
            f"cluster = {_toml_str(settings['cluster'])}",
            f"database = {_toml_str(guids[tenant])}",
        ]
        if "aliases" in settings:
            lines.append("aliases = [" + ", ".join(_toml_str(a) for a in settings["aliases"]) + "]")
        for opt in ("rate_per_second", "burst", "max_concurrent"):
            if opt in settings:
                lines.append(f"{opt} = {settings[opt]!r}")
        if "role" in settings:
            lines.append(f"role = {_toml_str(settings['role'])}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="session")
def gateway(kqlgate_bin, engine, shim, tmp_path_factory) -> Gateway:
    from argon2 import PasswordHasher

    work = tmp_path_factory.mktemp("kqlgate")
    keys, hashes = {}, {}
    for tenant in TENANTS:
        key, phc = new_key(kqlgate_bin)
        keys[tenant], hashes[tenant] = key, [phc]
    # contoso also accepts a second key whose hash argon2-cffi made (as in config/demo.toml).
    extra = {"contoso": "contoso-second-key-" + secrets.token_hex(8)}
    hashes["contoso"].append(PasswordHasher().hash(extra["contoso"]))

    guids = {tenant: engine.guid(tenant) for tenant in TENANTS}
    port = free_port()
    config = work / "kqlgate.toml"
    write_config(config, f"127.0.0.1:{port}", engine.url, shim.url, hashes, guids)

    # bearer-env clusters read their token from the environment (check verifies it is set).
    token = "e2e-upstream-" + secrets.token_hex(12)
    env = {**os.environ, UPSTREAM_TOKEN_ENV: token}
    env.setdefault("RUST_LOG", "info")

    check = run_kqlgate(kqlgate_bin, "check", "--config", str(config), env=env)
    assert check.returncode == 0, (
        f"`kqlgate check --config` exited {check.returncode}\nstdout:\n{check.stdout}\n"
        f"stderr:\n{check.stderr}\nconfig:\n{config.read_text()}"
    )

    stderr_path = work / "kqlgate.stderr"
    _STATE["kqlgate stderr"] = stderr_path
    with open(stderr_path, "wb") as err, open(work / "kqlgate.stdout", "wb") as out:
        proc = subprocess.Popen([str(kqlgate_bin), "serve", "--config", str(config)],
                                stdout=out, stderr=err, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kqlgate serve exited with {proc.returncode}:\n{_tail(stderr_path)}", pytrace=False)
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"kqlgate /readyz not 200 within 30s:\n{_tail(stderr_path)}", pytrace=False)
            time.sleep(0.2)
        yield Gateway(url, config, stderr_path, keys, extra, guids, token, kqlgate_bin, env, shim)
    finally:
        _stop(proc)


# ---------------------------------------------------------------------------
# Helpers shared by the tests
# ---------------------------------------------------------------------------


def assert_envelope(resp: requests.Response, status: int, code: str, *, message_contains: str | None = None) -> dict:
    """kqlgate's own error: status, JSON content type, and every OneApi field."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:2000]}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", f"Content-Type {ctype!r}; body {resp.text[:500]}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an error envelope: {body}"
    err = body["error"]
    missing = [k for k in ("code", "message", "@type", "@message", "@context", "@permanent") if k not in err]
    assert not missing, f"envelope lacks {missing}: {body}"
    assert err["code"] == code, f"code {err['code']!r} != {code!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["@type"], str) and err["@type"], body
    assert isinstance(err["@message"], str) and err["@message"], body
    assert isinstance(err["@context"], dict) and "clientRequestId" in err["@context"], body
    assert isinstance(err["@permanent"], bool), body
    if message_contains is not None:
        assert message_contains in err["@message"], f"@message lacks {message_contains!r}: {err['@message']!r}"
    return err


def primary_rows(resp: requests.Response) -> list[dict]:
    """Rows of the primary table of a v1 or v2 answer, as dicts."""
    payload = resp.json()
    if isinstance(payload, dict):
        table = payload["Tables"][0]
    else:
        table = next(f for f in payload if f.get("FrameType") == "DataTable" and f.get("TableKind") == "PrimaryResult")
    names = [c["ColumnName"] for c in table["Columns"]]
    return [dict(zip(names, row)) for row in table["Rows"]]


def states(tenant: str) -> set[str]:
    return {row[1] for row in sample_data.DATASETS[tenant].rows}
