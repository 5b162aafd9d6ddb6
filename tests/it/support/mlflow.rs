//! A real MLflow tracking server and model registry (`tests/mlflow/registry.py`, from the
//! virtualenv `scripts/install-mlflow.sh` makes), and its Python client to register models.
//!
//! Without that virtualenv the tests that need it are skipped, except under CI, where
//! `scripts/test.sh` installs it and its absence is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::REPO;

pub struct Mlflow {
    pub url: String,
    server: Option<Child>,
    /// The server's stdin: it stops when this closes, so it goes when the test process does.
    _lifeline: Option<std::process::ChildStdin>,
    _dir: tempfile::TempDir,
}

fn python() -> Option<PathBuf> {
    let python = PathBuf::from(REPO).join(".venv-mlflow/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing under CI: scripts/test.sh runs scripts/install-mlflow.sh",
        python.display()
    );
    eprintln!(
        "skipping: no MLflow ({} missing; run scripts/install-mlflow.sh)",
        python.display()
    );
    None
}

fn registry_script() -> String {
    format!("{REPO}/tests/mlflow/registry.py")
}

impl Mlflow {
    /// The server the tests share (each registers models under names of its own): started on
    /// first use, stopped when the test process exits (its supervisor sees the pipe close).
    pub fn shared() -> Option<&'static Mlflow> {
        static SHARED: OnceLock<Option<Mlflow>> = OnceLock::new();
        SHARED.get_or_init(|| Mlflow::start(false)).as_ref()
    }

    /// A server of the test's own (to stop, or with MLflow's basic-auth app: user `admin`,
    /// password [`ADMIN_PASSWORD`]).
    pub fn start(auth: bool) -> Option<Mlflow> {
        let python = python()?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(python);
        command
            .arg(registry_script())
            .args([
                "serve",
                "--stop-on-stdin-eof",
                "--port",
                &port.to_string(),
                "--dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if auth {
            command.args(["--auth-admin-password", ADMIN_PASSWORD]);
        }
        let mut server = command.spawn().unwrap();
        let lifeline = server.stdin.take();
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("ready ") => break line[6..].to_owned(),
                Some(Ok(_)) => continue,
                _ => panic!("the MLflow server did not start (see its output above)"),
            }
        };
        Some(Mlflow {
            url,
            server: Some(server),
            _lifeline: lifeline,
            _dir: dir,
        })
    }

    /// Stop the server (it stays down).
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            super::signal(&server, "TERM");
            server.wait().unwrap();
        }
    }

    /// `registry.py register`: log `model` with mlflow.onnx.log_model as a new version of
    /// `name` (`--alias` and other flags in `extra`); its JSON answer.
    pub fn register(&self, name: &str, model: &str, extra: &[&str]) -> Value {
        self.client(&[&["register", "--name", name, "--model", model], extra].concat())
    }

    /// Point `alias` of `name` at `version`.
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) {
        self.client(&[
            "alias",
            "--name",
            name,
            "--alias",
            alias,
            "--version",
            version,
        ]);
    }

    fn client(&self, args: &[&str]) -> Value {
        let output = Command::new(python().unwrap())
            .arg(registry_script())
            .args(&args[..1])
            .args(["--uri", &self.url])
            .args(&args[1..])
            .env("MLFLOW_TRACKING_USERNAME", "admin")
            .env("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "registry.py {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// The admin password of servers started with the basic-auth app (the client always sends it;
/// servers without auth ignore it).
pub const ADMIN_PASSWORD: &str = "batchscore-tests-pw";

impl Drop for Mlflow {
    fn drop(&mut self) {
        self.stop();
    }
}
