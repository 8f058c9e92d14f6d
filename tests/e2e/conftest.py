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
    # test_enforced_properties.py: the default enforce_request_properties = true, behind the shim.
    "enforced": {"cluster": "enforced"},
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
        limits = {"kqlgate stderr": 8000, "duckdb-kql serve output": 1500}
        for name, path in list(_STATE.items()):
            report.sections.append((f"{name} (tail)", _tail(path, limits.get(name, 4000))))


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
        "# The default: kqlgate forces the request properties that keep a query in its database.",
        "[clusters.enforced]",
        f"url = {_toml_str(shim_url)}",
        'auth = "none"',
        "timeout_seconds = 60",
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


# ---------------------------------------------------------------------------
# AAD: a test identity provider (tests/idp) and a kqlgate that takes Bearer callers
# ---------------------------------------------------------------------------

IDP_RUN = REPO_ROOT / "tests" / "idp" / "run"
# kqlgate's own AAD tenant, where its cluster identities live and callers' apps are registered.
AAD_TENANT = "0e2e0aad-7e57-4c1a-9d00-00000000aad0"
AAD_AUDIENCE = "api://kqlgate-e2e"
# kqlgate's identity at the cluster (client-secret from the environment) ...
CLUSTER_CLIENT_ID = "c1a5e2e0-0000-4000-8000-00000000c1a5"
CLUSTER_SECRET_ENV = "KQLGATE_E2E_CLUSTER_SECRET"
# ... and fabrikam's own one ([tenants.upstream], client-secret from a file).
FABRIKAM_UPSTREAM_CLIENT_ID = "fab0e2e0-0000-4000-8000-00000000fab0"
# Callers. contoso: its application, or one user object; fabrikam: a whole AAD tenant, or one user.
CONTOSO_APP_ID = "c0de0000-0000-4000-8000-00000000c0de"
CONTOSO_USER_OID = "c0de0000-0000-4000-8000-0000000000b1"
FABRIKAM_TENANT_ID = "fab00000-0000-4000-8000-0000000000fa"
FABRIKAM_USER_OID = "fab00000-0000-4000-8000-0000000000b2"
AAD_TENANTS = {
    "contoso": {"aliases": ["Samples"], "aad_principals": [f"app:{CONTOSO_APP_ID}", f"oid:{CONTOSO_USER_OID}"]},
    "fabrikam": {"aliases": ["Fabrikam"], "aad_principals": [f"tid:{FABRIKAM_TENANT_ID}", f"oid:{FABRIKAM_USER_OID}"]},
}


@dataclass
class Idp:
    """One tests/idp/server.mjs process. stop() and start() keep its port (so its URL)."""

    name: str
    work: Path
    port: int = 0
    url: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, env: dict | None = None) -> "Idp":
        out_path = self.work / f"{self.name}.stdout"
        log = self.work / f"{self.name}.log"
        _STATE[f"idp {self.name} log"] = log
        out_path.write_text("")
        with open(out_path, "wb") as out, open(log, "ab") as err:
            self.proc = subprocess.Popen(["node", "server.mjs", str(self.port)], cwd=IDP_RUN.parent,
                                         stdout=out, stderr=err, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while True:
            text = out_path.read_text()
            if text.endswith("\n"):
                info = json.loads(text.splitlines()[0])
                self.url = info["url"]
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"test IdP {self.name} did not start (exit {self.proc.poll()}):\n{_tail(log)}",
                            pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    @property
    def openid_configuration(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    def token_response(self, client_id: str, *, scope: str = AAD_AUDIENCE + "/.default",
                       tenant: str = AAD_TENANT, **form) -> requests.Response:
        """The client-credentials grant at /<tenant>/oauth2/v2.0/token. Extra form fields set
        claims (aud, tid, oid, appid, azp, claims=<JSON>) or the lifetime (expires_in)."""
        data = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope,
                **{k: str(v) for k, v in form.items() if v is not None}}
        return requests.post(f"{self.url}/{tenant}/oauth2/v2.0/token", data=data, timeout=10)

    def token(self, client_id: str, **kw) -> str:
        resp = self.token_response(client_id, **kw)
        assert resp.status_code == 200, f"IdP refused a token for {client_id}: {resp.status_code} {resp.text}"
        return resp.json()["access_token"]

    def stats(self) -> dict:
        return requests.get(self.url + "/__stats", timeout=10).json()

    def token_requests(self, client_id: str) -> int:
        return self.stats()["token_requests"].get(client_id, 0)

    def admin(self, **change) -> dict:
        resp = requests.post(self.url + "/__admin", json=change, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()


def start_idp(work: Path, name: str, env: dict | None = None) -> Idp:
    """Installs tests/idp when needed (`run --install`: npm ci), then starts an IdP."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the AAD tests (tests/idp); the e2e suite never skips",
                    pytrace=False)
    install = subprocess.run([str(IDP_RUN), "--install"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, f"tests/idp/run --install failed:\n{install.stderr}"
    return Idp(name, work).start(env)


@pytest.fixture(scope="session")
def idp(tmp_path_factory) -> Idp:
    """The IdP kqlgate trusts for callers and asks for its own cluster tokens."""
    server = start_idp(tmp_path_factory.mktemp("idp"), "idp")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idp_other(tmp_path_factory) -> Idp:
    """A second, unrelated IdP: its own keys and issuer."""
    server = start_idp(tmp_path_factory.mktemp("idp-other"), "idp-other")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idp_es(tmp_path_factory) -> Idp:
    """A second IdP kqlgate also trusts: ES256 keys, its own issuer."""
    server = start_idp(tmp_path_factory.mktemp("idp-es"), "idp-es", env={"IDP_KEY_ALG": "ES256"})
    yield server
    server.stop()


@dataclass
class Kqlgate:
    """A kqlgate process of a test's own, from a config the test wrote."""

    url: str
    config_path: Path
    stderr_path: Path
    proc: subprocess.Popen = field(repr=False)

    def stop(self) -> None:
        _stop(self.proc)

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def launch_kqlgate(bin_path: Path, work: Path, name: str, config_text: str, port: int,
                   env: dict[str, str]) -> Kqlgate:
    """Writes the config, requires `kqlgate check` to pass, serves it and waits for /readyz."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / f"{name}.toml"
    config.write_text(config_text, encoding="utf-8")
    env = {**env}
    env.setdefault("RUST_LOG", "info")
    check = run_kqlgate(bin_path, "check", "--config", str(config), env=env)
    assert check.returncode == 0, (
        f"`kqlgate check --config` exited {check.returncode}\nstdout:\n{check.stdout}\n"
        f"stderr:\n{check.stderr}\nconfig:\n{config_text}"
    )
    stderr_path = work / f"{name}.stderr"
    _STATE[f"{name} stderr"] = stderr_path
    with open(stderr_path, "wb") as err, open(work / f"{name}.stdout", "wb") as out:
        proc = subprocess.Popen([str(bin_path), "serve", "--config", str(config)],
                                stdout=out, stderr=err, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kqlgate serve ({name}) exited with {proc.returncode}:\n{_tail(stderr_path)}", pytrace=False)
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return Kqlgate(url, config, stderr_path, proc)
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"kqlgate ({name}) /readyz not 200 within 30s:\n{_tail(stderr_path)}", pytrace=False)
        time.sleep(0.1)


def aad_identity_toml(idp_url: str, client_id: str, secret_env: str | None = None,
                      secret_file: Path | None = None, scope: str | None = None) -> list[str]:
    """The credential keys of a client-secret identity at the test IdP."""
    lines = ['auth = "client-secret"', f"tenant_id = {_toml_str(AAD_TENANT)}",
             f"client_id = {_toml_str(client_id)}", f"authority_host = {_toml_str(idp_url)}"]
    if secret_env:
        lines.append(f"client_secret_env = {_toml_str(secret_env)}")
    if secret_file:
        lines.append(f"client_secret_file = {_toml_str(str(secret_file))}")
    if scope:
        lines.append(f"scope = {_toml_str(scope)}")
    return lines


@dataclass
class AadGateway:
    """kqlgate with [aad] (callers' tokens from `idp` or `idp_es`), behind which a client-secret cluster
    identity at `idp` reaches the recording shim in front of the engine."""

    url: str
    guids: dict[str, str]
    cluster_secret: str
    fabrikam_secret: str
    shim: Shim = field(repr=False)
    idp: Idp = field(repr=False)
    process: Kqlgate = field(repr=False)

    def post(self, path: str, body, token: str | None, headers: dict | None = None, **kw) -> requests.Response:
        h = {"Accept": "application/json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return requests.post(self.url + path, json=body, headers=h, timeout=60, **kw)


@pytest.fixture(scope="session")
def aad_gateway(kqlgate_bin, engine, shim, idp, idp_es, tmp_path_factory) -> AadGateway:
    work = tmp_path_factory.mktemp("kqlgate-aad")
    cluster_secret = "cluster-secret-" + secrets.token_hex(12)
    fabrikam_secret = "fabrikam-secret-" + secrets.token_hex(12)
    secret_file = work / "fabrikam-upstream.secret"
    secret_file.write_text(fabrikam_secret + "\n", encoding="utf-8")
    # The IdP refuses these two clients without their secrets.
    idp.admin(clients={CLUSTER_CLIENT_ID: cluster_secret, FABRIKAM_UPSTREAM_CLIENT_ID: fabrikam_secret})

    guids = {tenant: engine.guid(tenant) for tenant in AAD_TENANTS}
    port = free_port()
    lines = [
        "# Written by tests/e2e/conftest.py (aad_gateway)",
        "[server]",
        f"listen = {_toml_str(f'127.0.0.1:{port}')}",
        "",
        "[aad]",
        "# each document's keys are good for its own issuer only",
        f"openid_config_urls = [{_toml_str(idp.openid_configuration)}, {_toml_str(idp_es.openid_configuration)}]",
        f"audiences = [{_toml_str(AAD_AUDIENCE)}]",
        f"login_endpoint = {_toml_str(idp.url)}",
        "",
        "# kqlgate's own identity at the cluster; the default scope is <scheme://host of url>/.default",
        "[clusters.aad]",
        f"url = {_toml_str(shim.url)}",
        *aad_identity_toml(idp.url, CLUSTER_CLIENT_ID, secret_env=CLUSTER_SECRET_ENV),
        "timeout_seconds = 60",
        "enforce_request_properties = false",
        "",
    ]
    for tenant, settings in AAD_TENANTS.items():
        lines += [
            "[[tenants]]",
            f"id = {_toml_str(tenant)}",
            'cluster = "aad"',
            f"database = {_toml_str(guids[tenant])}",
            "aliases = [" + ", ".join(_toml_str(a) for a in settings["aliases"]) + "]",
            "aad_principals = [" + ", ".join(_toml_str(p) for p in settings["aad_principals"]) + "]",
            "",
        ]
        if tenant == "fabrikam":
            lines += ["[tenants.upstream]",
                      *aad_identity_toml(idp.url, FABRIKAM_UPSTREAM_CLIENT_ID, secret_file=secret_file), ""]
    env = {**os.environ, CLUSTER_SECRET_ENV: cluster_secret}
    process = launch_kqlgate(kqlgate_bin, work, "kqlgate-aad", "\n".join(lines), port, env)
    try:
        yield AadGateway(process.url, guids, cluster_secret, fabrikam_secret, shim, idp, process)
    finally:
        process.stop()
