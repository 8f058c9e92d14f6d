"""config/demo.toml stays consistent with the sample data and its documented keys."""
from __future__ import annotations

import re
import tomllib

from argon2 import PasswordHasher

import sample_data
from conftest import REPO_ROOT, run_kqlgate

DEMO = REPO_ROOT / "config" / "demo.toml"


def test_demo_config_is_valid(kqlgate_bin):
    res = run_kqlgate(kqlgate_bin, "check", "--config", str(DEMO))
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr}"


def test_demo_tenants_match_sample_data_and_documented_keys():
    text = DEMO.read_text()
    config = tomllib.loads(text)
    tenants = {t["id"]: t for t in config["tenants"]}
    assert set(tenants) == set(sample_data.DEMO_DATASETS)
    assert [a.lower() for a in tenants["contoso"]["aliases"]] == ["samples"]
    assert [a.lower() for a in tenants["fabrikam"]["aliases"]] == ["fabrikam"]
    for tenant_id, tenant in tenants.items():
        assert tenant["database"] == sample_data.DATASETS[tenant_id].guid
        # The key documented in the file's comment verifies against the configured hash.
        documented = re.search(rf"tenant {re.escape(tenant_id)}\s+key\s+(\S+)", text)
        assert documented, f"no documented demo key for {tenant_id}"
        assert any(PasswordHasher().verify(h, documented.group(1)) for h in tenant["key_hashes"])
    assert config["clusters"]["main"]["url"] == "http://127.0.0.1:31415"
