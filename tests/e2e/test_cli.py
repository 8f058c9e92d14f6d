"""kqlgate's CLI: key generation/hashing and `check`."""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

import pytest

from conftest import new_key, run_kqlgate


def test_key_new_hash_verifies_with_argon2_cffi(kqlgate_bin):
    key, phc = new_key(kqlgate_bin)
    assert PasswordHasher().verify(phc, key)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(phc, key + "x")
    other_key, _ = new_key(kqlgate_bin)
    assert other_key != key


def test_key_hash_reads_stdin(kqlgate_bin):
    res = run_kqlgate(kqlgate_bin, "key", "hash", stdin="my-secret-key\n")
    assert res.returncode == 0, res.stderr
    phc = res.stdout.strip().splitlines()[0]
    assert phc.startswith("$argon2id$"), phc
    assert PasswordHasher().verify(phc, "my-secret-key")


def test_check_accepts_running_config(gateway):
    res = run_kqlgate(gateway.bin_path, "check", "--config", str(gateway.config_path), env=gateway.env)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("mutation", [
    ("[server]", "[server]\nbogus_key = 1"),  # unknown keys are errors
    ('cluster = "main"', 'cluster = "nosuchcluster"'),
])
def test_check_rejects_invalid_config(gateway, tmp_path, mutation):
    text = gateway.config_path.read_text()
    old, new = mutation
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    res = run_kqlgate(gateway.bin_path, "check", "--config", str(bad), env=gateway.env)
    assert res.returncode == 2, f"exit {res.returncode}; stdout {res.stdout!r}; stderr {res.stderr!r}"
    assert res.stderr.strip(), "no diagnostic on stderr"


def test_check_rejects_missing_file(kqlgate_bin, tmp_path):
    res = run_kqlgate(kqlgate_bin, "check", "--config", str(tmp_path / "absent.toml"))
    assert res.returncode == 2, (res.returncode, res.stderr)  # 2, not a crash (101)
    assert "cannot read" in res.stderr, res.stderr
