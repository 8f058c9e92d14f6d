//! HTTPS on the listener: HTTP/1.1 and HTTP/2 by ALPN, and a certificate replaced on disk is
//! served without a restart. Certificates are made at test time with rcgen.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::upstream::TestUpstream;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's PEM.
fn issue(dir: &Path, ca_name: &str) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    // Write the key first and the certificate last, as a renewal tool would.
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    ca.pem()
}

fn trusting(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_with_alpn_and_certificates_reloaded_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = issue(dir.path(), "first CA");
    let upstream = TestUpstream::start().await;
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let text = config(
        &upstream.url(),
        "",
        "",
        &[TenantSpec::new("contoso", "k-123", CONTOSO_DB)],
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{tls}"),
    );
    let gate = Kqlgate::start(&text);
    let url = format!("https://127.0.0.1:{}", gate.addr.port());

    let h2 = trusting(&first_ca, false)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = trusting(&first_ca, true)
        .post(format!("{url}/v1/rest/query"))
        .header("authorization", basic("contoso", "k-123"))
        .body(r#"{"csl":"print 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (h1.version(), h1.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );
    let plain = client()
        .get(format!("http://127.0.0.1:{}/healthz", gate.addr.port()))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain http answered on the TLS port"
    );

    let second_ca = issue(dir.path(), "second CA");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut reloaded = false;
    while Instant::now() < deadline && !reloaded {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reloaded = trusting(&second_ca, false)
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok();
    }
    assert!(reloaded, "the renewed certificate was not served");
    let old = trusting(&first_ca, false)
        .get(format!("{url}/healthz"))
        .send()
        .await;
    assert!(old.is_err(), "the old certificate is still served");
}

#[test]
fn check_refuses_unreadable_or_mismatched_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "CA");
    let other = tempfile::tempdir().unwrap();
    issue(other.path(), "other CA");
    let text = config(
        "http://127.0.0.1:1",
        "",
        "",
        &[TenantSpec::new("contoso", "k", CONTOSO_DB)],
    );
    for (cert, key) in [
        (dir.path().join("cert.pem"), other.path().join("key.pem")),
        (dir.path().join("missing.pem"), dir.path().join("key.pem")),
        (dir.path().join("key.pem"), dir.path().join("key.pem")),
    ] {
        let tls = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        );
        let path = dir.path().join("kqlgate.toml");
        std::fs::write(&path, text.replace("[server]", &format!("[server]\n{tls}"))).unwrap();
        let output = std::process::Command::new(binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("server.tls_cert"));
    }
}
