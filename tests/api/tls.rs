//! HTTPS served by `starsync serve` itself (STARSYNC_TLS_CERT / STARSYNC_TLS_KEY), with
//! certificates made at test time by a test CA: a node trusting that CA (`--ca-cert`) syncs, a
//! node that does not gets a certificate error (exit 1, not "unreachable" 2), SIGHUP swaps in a
//! renewed certificate without a restart (and a bad renewal keeps the old one), and a bad
//! certificate at start is an error naming the file.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde_json::Value;

/// A test CA and its key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM, DER).
    fn server_cert(&self, serial: u64) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, "starsync test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

/// `starsync serve` as a process, with its log kept for assertions.
struct TlsServer {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl TlsServer {
    fn spawn(app: &TestApp, extra: &[(&str, &str)]) -> TlsServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .current_dir(app.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in app.cli_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn starsync serve");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(pos) = line.find("listening on ") {
                let url = line[pos + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                assert!(url.starts_with("https://"), "{line}");
                port = Some(url.rsplit(':').next().unwrap().parse().unwrap());
                break;
            }
        }
        let port = port.unwrap_or_else(|| panic!("no listening line: {:?}", log.lock()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        TlsServer { child, port, log }
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn sighup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leaf certificate a fresh TLS connection is served, checked against the given CAs.
fn served_certificate(port: u16, cas: &[&Ca]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.cert.der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn node(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(node_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run starsync-node");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca1: PathBuf,
    ca2: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    Files {
        cert: p("server.crt"),
        key: p("server.key"),
        ca1: p("ca1.pem"),
        ca2: p("ca2.pem"),
        _dir: dir,
    }
}

#[test]
fn a_node_trusting_the_private_ca_syncs_over_https_and_sighup_renews_the_certificate() {
    let (ca1, ca2) = (Ca::new("starsync test CA 1"), Ca::new("starsync test CA 2"));
    let f = files();
    ca1.write_pem(&f.ca1);
    ca2.write_pem(&f.ca2);
    let (cert1, key1, der1) = ca1.server_cert(1001);
    std::fs::write(&f.cert, &cert1).unwrap();
    std::fs::write(&f.key, &key1).unwrap();

    let app = TestApp::spawn();
    // A non-loopback bind with TLS: no "plain HTTP" warning.
    let mut server = TlsServer::spawn(
        &app,
        &[
            ("STARSYNC_BIND", "0.0.0.0:0"),
            ("STARSYNC_TLS_CERT", f.cert.to_str().unwrap()),
            ("STARSYNC_TLS_KEY", f.key.to_str().unwrap()),
        ],
    );
    assert!(!server.log().contains("plain HTTP"), "{}", server.log());
    assert_eq!(served_certificate(server.port, &[&ca1, &ca2]), der1);
    let base = server.base();

    // Trusting the test CA: init and sync over https.
    let a = tempfile::tempdir().unwrap();
    let ca1_arg = f.ca1.to_str().unwrap();
    let (code, v, err) = node(
        a.path(),
        &[
            "init",
            "--server",
            &base,
            "--code",
            "TLS-A",
            "--admin-token",
            ADMIN,
            "--ca-cert",
            ca1_arg,
        ],
    );
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["ca_cert"], ca1_arg, "{v}");
    let (code, v, _) = node(a.path(), &["create", "Task", r#"{"title": "over https"}"#]);
    assert_eq!(code, 0, "{v}");
    let uuid = v["uuid"].as_str().unwrap().to_string();
    let (code, v, err) = node(a.path(), &["sync"]);
    assert_eq!(code, 0, "{v} {err}");
    let (s, entity) = app.get(&format!("/api/sync/entities/Task/{uuid}"), Some(ADMIN));
    assert_eq!(s, 200, "{entity}");

    // Without the CA: a certificate error, exit 1 (a configuration problem), not 2.
    let b = tempfile::tempdir().unwrap();
    let (code, v, _) = node(
        b.path(),
        &[
            "init",
            "--server",
            &base,
            "--code",
            "TLS-B",
            "--admin-token",
            ADMIN,
        ],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["kind"], "certificate", "{v}");
    let text = v["error"].as_str().unwrap();
    assert!(
        text.contains("certificate") && text.contains("--ca-cert"),
        "{text}"
    );

    // A bad renewal: SIGHUP keeps the certificate in use and says why.
    std::fs::write(&f.cert, "not a certificate\n").unwrap();
    server.sighup();
    server.wait_for_log("keeping the certificate in use");
    assert_eq!(served_certificate(server.port, &[&ca1, &ca2]), der1);

    // The renewal (another CA, another serial): new connections get it, same process.
    let (cert2, key2, der2) = ca2.server_cert(2002);
    std::fs::write(&f.key, &key2).unwrap();
    std::fs::write(&f.cert, &cert2).unwrap();
    server.sighup();
    server.wait_for_log("TLS certificate reloaded");
    assert_eq!(served_certificate(server.port, &[&ca1, &ca2]), der2);

    // Node A still trusts only CA 1: its sync now fails on the certificate (exit 1, no
    // retries as if the network were down); given CA 2, it syncs against the same process.
    let (code, v, _) = node(
        a.path(),
        &["create", "Task", r#"{"title": "after renewal"}"#],
    );
    assert_eq!(code, 0, "{v}");
    let (code, v, _) = node(a.path(), &["sync"]);
    assert_eq!((code, &v["kind"]), (1, &Value::from("certificate")), "{v}");
    let (code, v, _) = node(a.path(), &["config", "ca_cert", f.ca2.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    let (code, v, err) = node(a.path(), &["sync"]);
    assert_eq!(code, 0, "{v} {err}");
    // One process throughout: started once, never restarted.
    assert_eq!(
        server.log().matches("starsync listening on").count(),
        1,
        "{}",
        server.log()
    );
    assert!(server.child.try_wait().unwrap().is_none());
}

#[test]
fn a_bad_certificate_or_key_at_start_is_an_error_naming_the_file() {
    let ca = Ca::new("starsync test CA");
    let f = files();
    let (cert, key, _) = ca.server_cert(7);
    let (_, other_key, _) = ca.server_cert(8);
    let app = TestApp::spawn();
    let serve = |env: &[(&str, &Path)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(app.path());
        for (k, v) in app.cli_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Not PEM at all.
    std::fs::write(&f.cert, "hello\n").unwrap();
    std::fs::write(&f.key, &key).unwrap();
    let (ok, err) = serve(&[("STARSYNC_TLS_CERT", &f.cert), ("STARSYNC_TLS_KEY", &f.key)]);
    assert!(!ok);
    assert!(
        err.contains(f.cert.to_str().unwrap()) && err.contains("STARSYNC_TLS_CERT"),
        "{err}"
    );

    // A key that is not the certificate's.
    std::fs::write(&f.cert, &cert).unwrap();
    std::fs::write(&f.key, &other_key).unwrap();
    let (ok, err) = serve(&[("STARSYNC_TLS_CERT", &f.cert), ("STARSYNC_TLS_KEY", &f.key)]);
    assert!(!ok);
    assert!(
        err.contains(f.key.to_str().unwrap()) && err.contains("STARSYNC_TLS_KEY"),
        "{err}"
    );

    // A missing file.
    let missing = f.cert.with_file_name("missing.pem");
    let (ok, err) = serve(&[
        ("STARSYNC_TLS_CERT", &missing),
        ("STARSYNC_TLS_KEY", &f.key),
    ]);
    assert!(!ok);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    // Only one of the two.
    let (ok, err) = serve(&[("STARSYNC_TLS_CERT", &f.cert)]);
    assert!(!ok);
    assert!(
        err.contains("STARSYNC_TLS_CERT") && err.contains("STARSYNC_TLS_KEY"),
        "{err}"
    );
}
