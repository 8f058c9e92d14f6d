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
        // Not TOML: no key path, but what is wrong.
        ("[server\n".to_string(), "invalid table header"),
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

/// `kqlgate tenant …` on a copy of the demo config: every subcommand, the file's comments and
/// layout kept, the file valid after each step, the new key shown once and never written.
#[test]
fn tenant_subcommands_edit_the_demo_config_in_place() {
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    let (_dir, path) = write_config(&demo);
    let tenant = |args: &[&str]| {
        let mut all = vec!["tenant", "--config", &path];
        all.extend_from_slice(args);
        let output = run(&all, "");
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let database = "33333333-3333-3333-3333-333333333333";
    let (code, out, err) = tenant(&[
        "add",
        "northwind",
        "--database",
        database,
        "--alias",
        "Northwind",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let key = out.lines().next().unwrap().to_owned();
    assert_eq!(key.len(), 43, "{out}");
    assert!(
        out.contains(&format!(".add database ['{database}'] viewers")),
        "{out}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&key), "the key itself is never written");
    for line in demo.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(text.contains(line), "comment lost: {line}");
    }
    let first_hash = |text: &str| {
        let line = text
            .lines()
            .skip_while(|l| !l.contains("\"northwind\""))
            .find(|l| l.starts_with("key_hashes"))
            .unwrap()
            .to_owned();
        line.split('"').nth(1).unwrap().to_owned()
    };
    let hash = first_hash(&text);
    assert!(verifies(&key, &hash));
    assert_eq!(
        run(&["check", "--config", &path], "").status.code(),
        Some(0)
    );

    let (code, out, _) = tenant(&["list"]);
    assert_eq!(code, Some(0));
    let listed = out
        .lines()
        .find(|l| l.starts_with("northwind "))
        .unwrap()
        .to_owned();
    assert!(
        listed.contains("keys=1") && listed.contains(database),
        "{listed}"
    );
    assert!(!out.contains("$argon2id$"), "list shows no hashes: {out}");

    let (code, out, err) = tenant(&["rotate-key", "northwind"]);
    assert_eq!(code, Some(0), "{err}");
    let second_key = out.lines().next().unwrap().to_owned();
    assert_ne!(second_key, key);
    assert!(tenant(&["list"])
        .1
        .contains("northwind -> main/33333333-3333-3333-3333-333333333333 role=viewer keys=2"));
    let (code, _, err) = tenant(&["revoke-key", "northwind", "--older-than-newest"]);
    assert_eq!(code, Some(0), "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&hash), "the old key's hash is gone");
    // The last key of a tenant without AAD principals cannot go: the file would be invalid.
    assert!(
        text.contains("key_hashes = [\""),
        "the array keeps its layout: {text}"
    );
    let newest = first_hash(&text);
    let prefix = &newest.rsplit('$').next().unwrap()[..8];
    let (code, _, err) = tenant(&["revoke-key", "northwind", "--hash-prefix", prefix]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid config"), "{err}");

    let (code, _, err) = tenant(&["remove", "northwind"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        demo,
        "back to the file as it was"
    );
    let (code, _, err) = tenant(&["remove", "northwind"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no tenant northwind"), "{err}");
}

/// `kqlgate reload` signals the process named in the pid file; without one it says how.
#[test]
fn reload_signals_the_running_process_or_says_how() {
    let (_dir, path) = write_config(&valid());
    let output = run(&["reload", "--config", &path], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("kill -HUP"));
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("kqlgate.pid");
    let text = valid().replace(
        "[server]\n",
        &format!("[server]\npid_file = \"{}\"\n", pid_file.display()),
    );
    let (_dir, path) = write_config(&text);
    let mut server = Command::new(binary())
        .args(["serve", "--log-format", "json", "--config", &path])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {needle:?} in the log"),
            }
        }
    };
    wait_for("kqlgate listening");
    assert!(pid_file.exists(), "no pid file");
    let output = run(&["reload", "--config", &path], "");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(&format!("pid {}", server.id())), "{stdout}");
    assert!(wait_for("config reloaded").contains("Signal"));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().unwrap().code(), Some(0));
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}
