//! Models from a real MLflow registry: an alias resolved once per run and moved between runs,
//! the sha256 of every window's model (as Python computes it from the files the server holds),
//! the local cache when the registry is down, and exit 2 for what the registry does not hold.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::*;
use crate::scoring::{TimeForm, seed_sensor_readings};
use crate::support::mlflow::{ADMIN_PASSWORD, Mlflow};

/// A model name of the test's own on the shared server.
fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The binary with the registry at `registry` and the model cache in `cache`.
fn with_registry(p: &Project, registry: &str, cache: &Path, args: &[&str]) -> Output {
    p.command(args)
        .env("MLFLOW_TRACKING_URI", registry)
        .env("BATCHSCORE_MODEL_CACHE", cache)
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .output()
        .unwrap()
}

fn registry_job(p: &Project, uri: &str) {
    p.write_job("job", &sensor_job(&format!("uri = \"{uri}\""), ""));
}

fn field<'a>(registered: &'a Value, name: &str) -> &'a str {
    registered[name].as_str().unwrap()
}

async fn an_alias_moved_between_runs_takes_effect_at_the_next_run(kind: Kind) {
    let Some(p) = Project::new(kind).await else {
        return;
    };
    let Some(mlflow) = Mlflow::shared() else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let name = unique("machine-failure");
    let v1 = mlflow.register(&name, &onnx(CHAMPION), &["--alias", "champion"]);
    let v2 = mlflow.register(&name, &onnx(CHALLENGER), &[]);
    let cache = p.dir.path().join("cache");
    registry_job(&p, &format!("models:/{name}@champion"));
    start_at_t0(&p, "job");

    let run = |k: usize| {
        with_registry(
            &p,
            &mlflow.url,
            &cache,
            &["run-job", "job", "--at", &after_window(k)],
        )
    };
    assert_exit(&run(2), 0);
    mlflow.set_alias(&name, "champion", field(&v2, "version"));
    let second = run(5);
    assert_exit(&second, 0);
    assert!(
        stderr(&second).contains(&format!("models:/{name}/2")),
        "the run names the version it resolved: {}",
        stderr(&second)
    );

    // Windows 0–2 by version 1, 3–5 by version 2, each checked against ONNX Runtime's outputs.
    assert_scored(&p, "predictions", &[(0..3, CHAMPION), (3..6, CHALLENGER)]).await;
    let (sha1, sha2) = (
        field(&v1, "batchscore_sha256"),
        field(&v2, "batchscore_sha256"),
    );
    assert_ne!(sha1, sha2);
    assert_eq!(
        window_models(&p).await,
        [sha1, sha1, sha1, sha2, sha2, sha2]
    );

    // `models` lists both versions, newest first, with their registry version and alias.
    let models = models_json(&p, "job");
    assert_eq!(models.len(), 2, "{models:?}");
    assert_eq!(models[0]["sha256"], sha2);
    assert_eq!(models[1]["sha256"], sha1);
    for (model, version) in models.iter().zip(["2", "1"]) {
        assert_eq!(model["role"], "model");
        assert_eq!(model["windows"], 3);
        assert_eq!(model["current_windows"], 3);
        assert_eq!(model["rows_scored"], 120);
        let source = model["source"].as_str().unwrap();
        assert_eq!(source, format!("models:/{name}/{version} (alias champion)"));
    }

    // The downloads sit in the cache under their sha256, as Python computed it.
    let mut stored: Vec<String> = std::fs::read_dir(cache.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    stored.sort();
    let mut want = vec![sha1.to_owned(), sha2.to_owned()];
    want.sort();
    assert_eq!(stored, want);
}

on_all_databases!(an_alias_moved_between_runs_takes_effect_at_the_next_run);

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn the_registry_down_scores_from_the_cache_or_exits_1_naming_the_uri() {
    let p = Project::sqlite().await;
    let Some(mut mlflow) = Mlflow::start(false) else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let name = unique("machine-failure");
    let v1 = mlflow.register(&name, &onnx(CHAMPION), &["--alias", "champion"]);
    let uri = format!("models:/{name}@champion");
    registry_job(&p, &uri);
    start_at_t0(&p, "job");
    let cache = p.dir.path().join("cache");
    let url = mlflow.url.clone();
    assert_exit(
        &with_registry(
            &p,
            &url,
            &cache,
            &["run-job", "job", "--at", &after_window(0)],
        ),
        0,
    );
    mlflow.stop();

    // The version this job resolved last is in the cache: score with it, and say so.
    let offline = with_registry(
        &p,
        &url,
        &cache,
        &["run-job", "job", "--at", &after_window(1)],
    );
    assert_exit(&offline, 0);
    assert!(
        stderr(&offline).contains(&url) && stderr(&offline).contains("cache"),
        "the warning names the registry and the cache: {}",
        stderr(&offline)
    );
    let sha1 = field(&v1, "batchscore_sha256");
    assert_eq!(window_models(&p).await, [sha1, sha1]);
    assert_scored(&p, "predictions", &[(0..2, CHAMPION)]).await;

    // Nothing cached: transient, exit 1, naming the URI. Nothing is written.
    let empty = p.dir.path().join("empty-cache");
    let cold = with_registry(
        &p,
        &url,
        &empty,
        &["run-job", "job", "--at", &after_window(2)],
    );
    assert_exit(&cold, 1);
    assert!(
        stderr(&cold).contains(&uri),
        "names the URI: {}",
        stderr(&cold)
    );
    assert_eq!(window_models(&p).await.len(), 2);

    // The daemon counts it, per job, at load.
    let mut daemon = p.command(&[]);
    daemon
        .env("MLFLOW_TRACKING_URI", &url)
        .env("BATCHSCORE_MODEL_CACHE", &cache);
    let errors = |body: &str| {
        sample(
            body,
            "batchscore_model_registry_errors_total",
            "job=\"job\"",
        )
    };
    let body = daemon_metrics(daemon, 20, |body| errors(body).is_some_and(|v| v >= 1.0));
    assert!(errors(&body).is_some_and(|v| v >= 1.0), "{body}");
}

#[tokio::test]
async fn what_the_registry_does_not_hold_is_exit_2_naming_it() {
    let p = Project::sqlite().await;
    let Some(mlflow) = Mlflow::shared() else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let name = unique("machine-failure");
    mlflow.register(&name, &onnx(CHAMPION), &["--alias", "champion"]);
    let pyfunc = unique("not-onnx");
    mlflow.register(&pyfunc, &onnx(CHAMPION), &["--not-onnx"]);
    let cache = p.dir.path().join("cache");
    for (uri, says) in [
        (format!("models:/no-such-{name}@champion"), "no-such-"),
        (format!("models:/{name}@no-such-alias"), "no-such-alias"),
        (format!("models:/{name}/99"), "/99"),
        (format!("models:/{pyfunc}/1"), "ONNX"),
    ] {
        registry_job(&p, &uri);
        for command in [&["jobs", "validate", "job"][..], &["run-job", "job"][..]] {
            let out = with_registry(&p, &mlflow.url, &cache, command);
            assert_exit(&out, 2);
            let err = stderr(&out) + &stdout(&out);
            assert!(
                err.contains(&uri) && err.contains(says),
                "{command:?} on {uri}: {err}"
            );
        }
    }
    assert!(!p.table_exists("predictions").await);

    // A URI batchscore cannot read, and a registry it is not told of.
    registry_job(&p, &format!("models:/{name}"));
    let out = with_registry(&p, &mlflow.url, &cache, &["jobs", "validate", "job"]);
    assert_exit(&out, 2);
    let said = stderr(&out) + &stdout(&out);
    assert!(said.contains("models:/NAME@ALIAS"), "{said}");
    registry_job(&p, &format!("models:/{name}@champion"));
    let out = p
        .command(&["jobs", "validate", "job"])
        .env_remove("MLFLOW_TRACKING_URI")
        .env("BATCHSCORE_MODEL_CACHE", &cache)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let said = stderr(&out) + &stdout(&out);
    assert!(said.contains("MLFLOW_TRACKING_URI"), "{said}");

    // With the registry, a URI works wherever a path does.
    let out = with_registry(&p, &mlflow.url, &cache, &["jobs", "validate", "job"]);
    assert_exit(&out, 0);
    let dry = with_registry(&p, &mlflow.url, &cache, &["run-job", "job", "--dry-run"]);
    assert_exit(&dry, 0);
    assert!(
        stdout(&dry).contains(&format!("models:/{name}/1 (alias champion)")),
        "{}",
        stdout(&dry)
    );
    assert!(
        !p.table_exists("predictions").await,
        "a dry run writes nothing"
    );
    let new = with_registry(
        &p,
        &mlflow.url,
        &cache,
        &[
            "jobs",
            "new",
            "scaffolded",
            "--table",
            "sensor_readings",
            "--model",
            &format!("models:/{name}@champion"),
        ],
    );
    assert_exit(&new, 0);
    let written = std::fs::read_to_string(p.jobs_dir().join("scaffolded.toml")).unwrap();
    assert!(
        written.contains(&format!("uri = \"models:/{name}@champion\"")),
        "{written}"
    );
}

#[tokio::test]
async fn a_registry_with_basic_auth_needs_its_credentials() {
    let p = Project::sqlite().await;
    let Some(mlflow) = Mlflow::start(true) else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let v1 = mlflow.register("secured", &onnx(CHAMPION), &["--alias", "champion"]);
    registry_job(&p, "models:/secured@champion");
    start_at_t0(&p, "job");
    let cache = p.dir.path().join("cache");
    let run = ["run-job", "job", "--at", &after_window(0)];

    let refused = with_registry(&p, &mlflow.url, &cache, &run);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("MLFLOW_TRACKING_USERNAME"),
        "says which credentials to set: {}",
        stderr(&refused)
    );
    let signed_in = p
        .command(&run)
        .env("MLFLOW_TRACKING_URI", &mlflow.url)
        .env("BATCHSCORE_MODEL_CACHE", &cache)
        .env("MLFLOW_TRACKING_USERNAME", "admin")
        .env("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert_exit(&signed_in, 0);
    assert_eq!(window_models(&p).await, [field(&v1, "batchscore_sha256")]);
    assert_scored(&p, "predictions", &[(0..1, CHAMPION)]).await;
}

#[tokio::test]
async fn processes_downloading_one_version_at_once_share_one_cache_entry() {
    let p = Project::sqlite().await;
    let Some(mlflow) = Mlflow::shared() else {
        return;
    };
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let name = unique("machine-failure");
    let v1 = mlflow.register(&name, &onnx(CHALLENGER), &["--alias", "champion"]);
    registry_job(&p, &format!("models:/{name}@champion"));
    let cache = p.dir.path().join("cache");
    let children: Vec<_> = (0..4)
        .map(|_| {
            p.command(&["jobs", "validate", "job"])
                .env("MLFLOW_TRACKING_URI", &mlflow.url)
                .env("BATCHSCORE_MODEL_CACHE", &cache)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    // One entry, named by the sha256 Python computed, holding model.onnx and its external
    // data file (the challenger's weights are externalized by mlflow.onnx.log_model); no
    // staging directory or temporary file left behind.
    let sha = field(&v1, "batchscore_sha256");
    let files = files_under(&cache);
    let entries: Vec<_> = files.iter().filter(|f| f.starts_with("sha256")).collect();
    assert!(
        entries
            .iter()
            .all(|f| f.starts_with(format!("sha256/{sha}"))),
        "{files:?}"
    );
    assert!(
        entries.iter().any(|f| f.ends_with("model.onnx")),
        "{files:?}"
    );
    assert!(
        entries.len() >= 2,
        "model.onnx and its external data: {files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("tmp") && !f.to_string_lossy().ends_with(".tmp")),
        "nothing half-written is left: {files:?}"
    );
}
