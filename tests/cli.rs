//! The command-line contract: `check`, `key new`, `key hash`, and `serve` refusing a bad config.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use common::{binary, config, TenantSpec, CONTOSO_DB};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("KQLGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kqlgate.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn valid() -> String {
    config(
        "http://127.0.0.1:31415",
        "",
        "",
        &[TenantSpec::new("contoso", "k", CONTOSO_DB).with("aliases = [\"Samples\"]")],
    )
}

fn verifies(key: &str, phc: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(key.as_bytes(), &PasswordHash::new(phc).unwrap())
        .is_ok()
}

#[test]
fn check_accepts_a_valid_config_and_summarises_it() {
    let (_dir, path) = write_config(&valid());
    let output = run(&["check", "--config", &path], "");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("contoso"), "{stdout}");
    assert!(stdout.contains(CONTOSO_DB), "{stdout}");
    assert!(stdout.lines().count() < 40);
}

#[test]
fn check_names_the_key_of_each_problem_and_exits_2() {
    let valid = valid();
    let hash_line = valid.lines().find(|l| l.starts_with("key_hashes")).unwrap();
    let duplicate = format!(
        "{valid}\n[[tenants]]\nid = \"contoso\"\n{hash_line}\ncluster = \"main\"\ndatabase = \"{CONTOSO_DB}\"\n"
    );
    let cases = [
        (
            valid.replace("[server]", "[server]\nlisten_port = 1"),
            "server.listen_port",
        ),
        (duplicate, "tenants[1].id"),
        (
            valid.replace("cluster = \"main\"", "cluster = \"nowhere\""),
            "tenants[0].cluster",
        ),
        (
            valid.replace(hash_line, "key_hashes = [\"$argon2id$broken\"]"),
            "tenants[0].key_hashes[0]",
        ),
        ("[server\n".to_string(), ""),
    ];
    for (text, key_path) in cases {
        let (_dir, path) = write_config(&text);
        let output = run(&["check", "--config", &path], "");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{key_path}: {stderr}");
        assert!(
            stderr.contains(key_path),
            "expected {key_path:?} in: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_an_invalid_config_the_same_way() {
    let (_dir, path) = write_config(&valid().replace("cluster = \"main\"", "cluster = \"x\""));
    let output = run(&["serve", "--config", &path], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("tenants[0].cluster"));
    let output = run(&["--config", &path], "");
    assert_eq!(
        output.status.code(),
        Some(2),
        "serve is the default command"
    );
}

#[test]
fn config_path_defaults_to_the_environment_variable() {
    let (_dir, path) = write_config(&valid());
    let output = Command::new(binary())
        .arg("check")
        .env("KQLGATE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn key_new_prints_a_key_and_its_hash() {
    let output = run(&["key", "new"], "");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (key, hash) = (lines[0], lines[1]);
    assert!(
        key.len() >= 22,
        "a 128-bit key needs at least 22 base64 characters"
    );
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(hash.starts_with("$argon2id$"));
    assert!(verifies(key, hash));
    let again = String::from_utf8(run(&["key", "new"], "").stdout).unwrap();
    assert_ne!(again.lines().next().unwrap(), key);
}

#[test]
fn key_hash_reads_stdin_and_ignores_the_trailing_newline() {
    let output = run(&["key", "hash"], "my-api-key\n");
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim_end();
    assert!(verifies("my-api-key", hash));
    assert!(!verifies("my-api-key\n", hash));
    assert!(!hash.contains("my-api-key"));
}
