//! TLS to the database: a job runs over TLS when the URL asks for it (and, on MySQL, by default
//! when the server offers it, as MySQL 8 does), a certificate that does not verify is refused
//! with an error that says so, and the reader's own session is the one encrypted: each job's
//! query reads its rows only when its session runs over TLS.
//!
//! PostgreSQL is the test server (Debian turns `ssl` on). MySQL is a MariaDB server of the test's
//! own, started with a certificate made here, since the shared one has no TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sqlx::{Connection, Executor, Row};

use crate::support::*;

/// The query yields its rows only to a session over TLS (`{over_tls}` is each database's
/// condition).
const JOB: &str = r#"
schedule = "*/10 * * * *"
[source]
query = "SELECT id, ts, temperature, vibration, pressure, rpm FROM readings WHERE {over_tls}"
key = "id"
timestamp = "ts"
features = ["temperature", "vibration", "pressure", "rpm"]
[window]
size = "1h"
[model]
path = "{models}/machine_failure.onnx"
[outputs]
failure_probability = "probabilities[1]"
[sink]
table = "scores"
"#;

const POSTGRES_OVER_TLS: &str = "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";
const MYSQL_OVER_TLS: &str = "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
     WHERE VARIABLE_NAME = 'Ssl_cipher') <> ''";

/// A backfill of the window 2026-01-10T00:00Z–01:00Z, which holds one reading.
const BACKFILL: [&str; 6] = [
    "run-job",
    "job",
    "--from",
    "2026-01-10T00:00:00Z",
    "--to",
    "2026-01-10T01:00:00Z",
];

/// A certificate authority, and a server certificate for 127.0.0.1 and localhost it signed.
struct Certificates {
    ca: String,
    server: String,
    server_key: String,
}

fn certificates() -> Certificates {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "batchscore test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    Certificates {
        ca: ca_cert.pem(),
        server: server.pem(),
        server_key: server_key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `url` with `pairs` added to its query string.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).unwrap();
    for (key, value) in pairs {
        url.query_pairs_mut().append_pair(key, value);
    }
    url.to_string()
}

/// The number of rows in the results table, or 0 while there is none.
async fn scored(p: &Project) -> i64 {
    match p.table_exists("scores").await {
        true => p.count("SELECT count(*) FROM scores").await,
        false => 0,
    }
}

fn backfill(p: &Project, url: &str) -> Output {
    p.command(&BACKFILL)
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

/// The refusal of a certificate: exit 2 (a configuration to fix, not a network to wait for),
/// naming the certificate and the URL's `parameters` to check (the URL itself is in the message
/// too, so the words around them are what is looked for).
fn assert_certificate_refused(out: &Output, parameters: &str) {
    assert_exit(out, 2);
    let err = stderr(out);
    assert!(
        err.contains("cannot connect to the database")
            && err.contains("invalid peer certificate")
            && err.contains(&format!("(check the URL's {parameters}: README, TLS)")),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_over_tls() {
    let Some(p) = Project::postgres().await else {
        return;
    };
    let ssl: String = sqlx::query("SHOW ssl")
        .fetch_one(&p.pool)
        .await
        .unwrap()
        .get(0);
    if ssl != "on" {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the PostgreSQL test server has ssl = {ssl}; CI needs it on"
        );
        eprintln!("skipping: the PostgreSQL test server has ssl = {ssl}");
        return;
    }
    p.execute(
        "CREATE TABLE readings (id bigint PRIMARY KEY, ts timestamptz NOT NULL, \
         temperature double precision, vibration double precision, pressure double precision, \
         rpm integer); \
         INSERT INTO readings VALUES (1, '2026-01-10T00:10:00Z', 70, 3, 5, 2000)",
    )
    .await;
    p.write_job("job", &JOB.replace("{over_tls}", POSTGRES_OVER_TLS));

    // A CA that did not sign the server's certificate: refused before anything is read.
    let wrong_ca = write(p.dir.path(), "wrong-ca.pem", &certificates().ca);
    let out = backfill(
        &p,
        &with_query(
            &p.url,
            &[("sslmode", "verify-full"), ("sslrootcert", &wrong_ca)],
        ),
    );
    assert_certificate_refused(&out, "sslmode and sslrootcert");
    // A CA file that is not there: a setting to fix (exit 2), not a network to wait for.
    let missing = p.dir.path().join("no-such-ca.pem").display().to_string();
    let out = backfill(
        &p,
        &with_query(
            &p.url,
            &[("sslmode", "verify-full"), ("sslrootcert", &missing)],
        ),
    );
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(&format!("sslrootcert: cannot read {missing}")),
        "{}",
        stderr(&out)
    );
    // Without TLS the query reads nothing: the condition is real.
    assert_exit(
        &backfill(&p, &with_query(&p.url, &[("sslmode", "disable")])),
        0,
    );
    assert_eq!(scored(&p).await, 0, "a plaintext session read the row");
    // `require`, and the default (`prefer`, like libpq's) both run over TLS.
    for url in [with_query(&p.url, &[("sslmode", "require")]), p.url.clone()] {
        p.execute("DELETE FROM scores").await;
        assert_exit(&backfill(&p, &url), 0);
        assert_eq!(scored(&p).await, 1, "{url} did not run over TLS");
    }
}

/// A MariaDB server of the test's own, offering TLS, on a free port; stopped on drop.
struct TlsMariaDb {
    server: Child,
    dir: tempfile::TempDir,
    port: u16,
    ca: String,
}

impl TlsMariaDb {
    /// `None` (test skipped) where MariaDB is not installed, except under CI.
    fn start() -> Option<TlsMariaDb> {
        let found = |name: &str| {
            ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
                .iter()
                .map(|dir| PathBuf::from(dir).join(name))
                .find(|path| path.exists())
        };
        let (Some(mariadbd), Some(install)) = (found("mariadbd"), found("mariadb-install-db"))
        else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "mariadbd and mariadb-install-db are needed under CI"
            );
            eprintln!("skipping: no mariadbd to start a TLS server with");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let installed = Command::new(install)
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", data.display()))
            .output()
            .unwrap();
        assert!(installed.status.success(), "{}", stderr(&installed));
        let certificates = certificates();
        let ca = write(dir.path(), "ca.pem", &certificates.ca);
        let cert = write(dir.path(), "server.pem", &certificates.server);
        let key = write(dir.path(), "server-key.pem", &certificates.server_key);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let server = Command::new(mariadbd)
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .args([
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", path("mariadb.sock")))
            .arg(format!("--pid-file={}", path("mariadb.pid")))
            .arg(format!("--log-error={}", path("error.log")))
            .arg(format!("--ssl-ca={ca}"))
            .arg(format!("--ssl-cert={cert}"))
            .arg(format!("--ssl-key={key}"))
            // Its log is error.log; what it prints before opening it is noise here.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Some(TlsMariaDb {
            server,
            dir,
            port,
            ca,
        })
    }

    fn url(&self, database: &str, pairs: &[(&str, &str)]) -> String {
        with_query(
            &format!("mysql://root@127.0.0.1:{}/{database}", self.port),
            pairs,
        )
    }

    /// An admin connection, once the server answers.
    async fn admin(&mut self) -> sqlx::MySqlConnection {
        let url = self.url("", &[("ssl-mode", "REQUIRED")]);
        let started = Instant::now();
        loop {
            let failed = match sqlx::MySqlConnection::connect(&url).await {
                Ok(conn) => return conn,
                Err(e) => e,
            };
            let exited = self.server.try_wait().unwrap();
            if exited.is_some() || started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "the TLS MariaDB did not start ({exited:?}): {failed}\n{}",
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[tokio::test]
async fn mysql_over_tls() {
    let Some(mut server) = TlsMariaDb::start() else {
        return;
    };
    let mut admin = server.admin().await;
    admin
        .execute(
            "CREATE DATABASE tls_test; \
             CREATE TABLE tls_test.readings (id BIGINT PRIMARY KEY, ts DATETIME(6) NOT NULL, \
             temperature DOUBLE, vibration DOUBLE, pressure DOUBLE, rpm INT); \
             INSERT INTO tls_test.readings VALUES (1, '2026-01-10 00:10:00', 70, 3, 5, 2000)",
        )
        .await
        .unwrap();
    // The results table's rows; none while there is no table.
    let count = async |admin: &mut sqlx::MySqlConnection| -> i64 {
        let tables: i64 = admin
            .fetch_one(
                "SELECT count(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = 'tls_test' AND TABLE_NAME = 'scores'",
            )
            .await
            .unwrap()
            .get(0);
        match tables {
            0 => 0,
            _ => admin
                .fetch_one("SELECT count(*) FROM tls_test.scores")
                .await
                .unwrap()
                .get(0),
        }
    };
    let jobs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(jobs.path().join("jobs")).unwrap();
    std::fs::write(
        jobs.path().join("jobs/job.toml"),
        JOB.replace("{over_tls}", MYSQL_OVER_TLS).replace(
            "{models}",
            &format!("{}/models", env!("CARGO_MANIFEST_DIR")),
        ),
    )
    .unwrap();
    let run = |url: String| -> Output {
        Command::new(env!("CARGO_BIN_EXE_batchscore"))
            .args(BACKFILL)
            .env("DATABASE_URL", url)
            .env("BATCHSCORE_JOBS_DIR", jobs.path().join("jobs"))
            .env_remove("RUST_LOG")
            .current_dir(jobs.path())
            .output()
            .unwrap()
    };

    // A CA that did not sign the server's certificate: refused before anything is read.
    let wrong_ca = write(jobs.path(), "wrong-ca.pem", &certificates().ca);
    let out = run(server.url(
        "tls_test",
        &[("ssl-mode", "VERIFY_IDENTITY"), ("ssl-ca", &wrong_ca)],
    ));
    assert_certificate_refused(&out, "ssl-mode and ssl-ca");
    // Without TLS the query reads nothing: the condition is real.
    let out = run(server.url("tls_test", &[("ssl-mode", "DISABLED")]));
    assert_exit(&out, 0);
    assert_eq!(
        count(&mut admin).await,
        0,
        "a plaintext session read the row"
    );
    // The right CA, with the server's name checked; then the default (`PREFERRED`), which takes
    // the TLS a server offers, as MySQL 8's does out of the box (and its default
    // `caching_sha2_password` accounts need).
    for url in [
        server.url(
            "tls_test",
            &[("ssl-mode", "VERIFY_IDENTITY"), ("ssl-ca", &server.ca)],
        ),
        server.url("tls_test", &[]),
    ] {
        admin.execute("DELETE FROM tls_test.scores").await.unwrap();
        let out = run(url.clone());
        assert_exit(&out, 0);
        assert_eq!(count(&mut admin).await, 1, "{url}: {}", stderr(&out));
    }
}

/// Answer MySQL 8's first steps of a login with `caching_sha2_password` on a plaintext
/// connection, for an account whose password the server has not cached yet (its first login
/// since the server started): the handshake names the plugin, and after the client's scramble
/// the server asks for the full authentication, which needs TLS (or RSA, which this build
/// leaves out). No MySQL 8 server can be installed here; these are the packets it sends.
fn mysql8_login_without_tls() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let packet = |seq: u8, payload: &[u8]| -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    };
    let read_packet = |stream: &mut std::net::TcpStream| -> Option<Vec<u8>> {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).ok()?;
        let mut payload =
            vec![0u8; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        stream.read_exact(&mut payload).ok()?;
        Some(payload)
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            // Protocol 10: version, connection id, 8 bytes of nonce, capabilities (long
            // password, connect with database, 4.1 protocol, transactions, secure connection;
            // plugin auth, length-encoded auth data), utf8mb4, 21 bytes of nonce in all.
            let mut handshake = vec![10];
            handshake.extend_from_slice(b"8.0.40\0");
            handshake.extend_from_slice(&7u32.to_le_bytes());
            handshake.extend_from_slice(b"abcdefgh\0");
            handshake.extend_from_slice(&0xA209u16.to_le_bytes());
            handshake.push(255);
            handshake.extend_from_slice(&2u16.to_le_bytes());
            handshake.extend_from_slice(&0x0028u16.to_le_bytes());
            handshake.push(21);
            handshake.extend_from_slice(&[0; 10]);
            handshake.extend_from_slice(b"ijklmnopqrst\0");
            handshake.extend_from_slice(b"caching_sha2_password\0");
            let _ = stream.write_all(&packet(0, &handshake));
            // The handshake response, with the scramble: "perform full authentication".
            if read_packet(&mut stream).is_none() {
                continue;
            }
            let _ = stream.write_all(&packet(2, &[0x01, 0x04]));
            // The request for the server's RSA key, and the key.
            if read_packet(&mut stream).is_none() {
                continue;
            }
            let key = b"\x01-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
            let _ = stream.write_all(&packet(4, key));
            while read_packet(&mut stream).is_some() {}
        }
    });
    port
}

#[tokio::test]
async fn mysql8_caching_sha2_without_tls_says_what_to_change() {
    let port = mysql8_login_without_tls();
    let jobs = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_batchscore"))
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("mysql://app:s3cret@127.0.0.1:{port}/app"),
        )
        .env("BATCHSCORE_JOBS_DIR", jobs.path())
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("mysql://app:***@127.0.0.1")
            && err.contains("caching_sha2_password")
            && err.contains("mysql_native_password")
            && !err.contains("feature"),
        "{err}"
    );
}
