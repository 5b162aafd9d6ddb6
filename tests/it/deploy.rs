//! The deploy examples (`deploy/`): no cluster is at hand, so each file is parsed and the fields
//! batchscore relies on are checked against the binary itself: the Indexed Job's completions
//! against the job's shards, the container arguments against the command line, the probes and
//! the scrape target against the daemon's real endpoints.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::*;

fn load(file: &str) -> Yaml {
    let path = Path::new(REPO).join("deploy").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(docs.len(), 1, "{file}: one object per file");
    docs.remove(0)
}

/// `node` at `path` (dot-separated keys; numbers index lists), failing with the file and path.
fn at<'y>(node: &'y Yaml, file: &str, path: &str) -> &'y Yaml {
    let mut here = node;
    for part in path.split('.') {
        here = match part.parse::<usize>() {
            Ok(i) => &here[i],
            Err(_) => &here[part],
        };
        assert!(!here.is_badvalue(), "{file}: no `{path}`");
    }
    here
}

fn text<'y>(node: &'y Yaml, file: &str, path: &str) -> &'y str {
    at(node, file, path)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not text"))
}

fn number(node: &Yaml, file: &str, path: &str) -> i64 {
    at(node, file, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not a number"))
}

fn strings(node: &Yaml, file: &str, path: &str) -> Vec<String> {
    at(node, file, path)
        .as_vec()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not a list"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The job files of the ConfigMap, written to a project with the repository's models and the
/// job's source table, and listed by the binary: they parse, and the machine_failure job has the
/// shards the CronJob runs.
async fn configmap_shards(p: &Project) -> i64 {
    std::os::unix::fs::symlink(Path::new(REPO).join("models"), p.dir.path().join("models"))
        .unwrap();
    p.seed_synthetic(100).await;
    let file = "kubernetes/configmap.yaml";
    let map = load(file);
    assert_eq!(text(&map, file, "kind"), "ConfigMap");
    let data = at(&map, file, "data").as_hash().unwrap();
    for (name, body) in data {
        let name = name.as_str().unwrap();
        let stem = name.strip_suffix(".toml").expect("job files end in .toml");
        p.write_job(stem, body.as_str().unwrap());
    }
    let out = p.batchscore(&["jobs", "list"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("machine_failure"), "{}", stdout(&out));
    let job = at(&map, file, "data")["machine_failure.toml"]
        .as_str()
        .unwrap();
    let job: toml::Table = toml::from_str(job).unwrap();
    job["source"]["shards"]
        .as_integer()
        .expect("a sharded example")
}

#[tokio::test]
async fn the_indexed_cronjob_runs_one_pod_per_shard() {
    let p = Project::sqlite().await;
    let shards = configmap_shards(&p).await;
    let file = "kubernetes/cronjob.yaml";
    let cron = load(file);
    assert_eq!(text(&cron, file, "apiVersion"), "batch/v1");
    assert_eq!(text(&cron, file, "kind"), "CronJob");
    let job = at(&cron, file, "spec.jobTemplate.spec");
    assert_eq!(text(job, file, "completionMode"), "Indexed");
    assert_eq!(
        number(job, file, "completions"),
        shards,
        "one index per shard"
    );
    assert_eq!(
        number(job, file, "parallelism"),
        shards,
        "every shard at once"
    );
    // Exit 2 (configuration) fails the shard without retries.
    let rule = at(job, file, "podFailurePolicy.rules.0");
    assert_eq!(text(rule, file, "action"), "FailIndex");
    assert_eq!(number(rule, file, "onExitCodes.values.0"), 2);
    let pod = at(job, file, "template.spec");
    assert_eq!(text(pod, file, "restartPolicy"), "Never");
    let container = at(pod, file, "containers.0");
    assert_eq!(
        text(container, file, "name"),
        text(rule, file, "onExitCodes.containerName")
    );
    // The pod's arguments name no shard: JOB_COMPLETION_INDEX does, as `run-job` reads it.
    let args = strings(container, file, "args");
    assert!(!args.iter().any(|a| a == "--shard"), "{args:?}");
    // The pod's command: each index is its shard.
    let mut command: Vec<&str> = args.iter().map(String::as_str).collect();
    command.push("--dry-run");
    let last = (shards - 1).to_string();
    let out = p
        .command(&command)
        .env("JOB_COMPLETION_INDEX", &last)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(&format!("shard:     {last}/{shards}")),
        "{}",
        stdout(&out)
    );
    let beyond = shards.to_string();
    let out = p
        .command(&command)
        .env("JOB_COMPLETION_INDEX", &beyond)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("out of range"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_daemon_deployment_probes_and_scrapes_what_the_daemon_serves() {
    let p = Project::sqlite().await;
    configmap_shards(&p).await;
    let file = "kubernetes/deployment.yaml";
    let deployment = load(file);
    assert_eq!(text(&deployment, file, "kind"), "Deployment");
    assert!(
        number(&deployment, file, "spec.replicas") >= 2,
        "replicas spread the shards"
    );
    let pod = at(&deployment, file, "spec.template");
    let container = at(pod, file, "spec.containers.0");
    let args = strings(container, file, "args");
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].clone())
        .expect("the daemon serves /healthz and /metrics");
    let port: i64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let named = at(container, file, "ports.0");
    assert_eq!(number(named, file, "containerPort"), port);
    let port_name = text(named, file, "name");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            text(container, file, &format!("{probe}.httpGet.path")),
            "/healthz"
        );
        assert_eq!(
            text(container, file, &format!("{probe}.httpGet.port")),
            port_name
        );
    }
    // The grace Kubernetes gives outlasts the daemon's own.
    let grace = args
        .iter()
        .position(|a| a == "--shutdown-grace")
        .map(|i| humantime_seconds(&args[i + 1]))
        .unwrap();
    assert!(number(pod, file, "spec.terminationGracePeriodSeconds") > grace);

    let monitor_file = "kubernetes/podmonitor.yaml";
    let monitor = load(monitor_file);
    assert_eq!(text(&monitor, monitor_file, "kind"), "PodMonitor");
    let endpoint = at(&monitor, monitor_file, "spec.podMetricsEndpoints.0");
    assert_eq!(text(endpoint, monitor_file, "port"), port_name);
    // batchscore's own `job` label must survive the scrape (the dashboard and alerts use it).
    assert_eq!(
        at(endpoint, monitor_file, "honorLabels").as_bool(),
        Some(true)
    );
    let path = text(endpoint, monitor_file, "path");
    let selector = at(&monitor, monitor_file, "spec.selector.matchLabels");
    let labels = at(pod, file, "metadata.labels");
    for (key, value) in selector.as_hash().unwrap() {
        assert_eq!(
            &labels[key.as_str().unwrap()],
            value,
            "the PodMonitor selects the pods"
        );
    }

    // The same arguments, on loopback (and logging as the test handle reads it): the daemon
    // answers the probe and the scrape.
    let mut local = args.clone();
    if let Some(i) = local.iter().position(|a| a == "--log-format") {
        local.drain(i..i + 2);
    }
    let i = local.iter().position(|a| a == "--listen").unwrap();
    local[i + 1] = "127.0.0.1:0".to_owned();
    let daemon = crate::daemon::Daemon::spawn(
        p.command(&local.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let port = daemon.port();
    eventually(10, "/healthz", || async {
        http_get(port, "/healthz").map(|r| r.0) == Some(200)
    })
    .await;
    let (status, body) = http_get(port, path).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("batchscore_"), "{body}");
    let (code, log) = crate::daemon::stop_daemon(daemon, std::time::Duration::from_secs(10));
    assert_eq!(code, 0, "{log}");
}

fn humantime_seconds(text: &str) -> i64 {
    text.strip_suffix('s').unwrap().parse().unwrap()
}

#[test]
fn systemd_and_cron_examples_call_the_binary_as_documented() {
    let unit =
        std::fs::read_to_string(Path::new(REPO).join("deploy/systemd/batchscore.service")).unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" daemon "), "{exec}");
    assert!(unit.contains("RestartPreventExitStatus=2"));
    let crontab = std::fs::read_to_string(Path::new(REPO).join("crontab.example")).unwrap();
    let lines: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("run-job"))
        .collect();
    assert!(lines.len() >= 2, "{crontab}");
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() > 6,
            "five schedule fields, then the command: {line}"
        );
        assert!(fields[5].ends_with("/batchscore"), "{line}");
    }
}

/// The metric names `/metrics` exports, as a query names them: counters with `_total`,
/// histograms with `_bucket`, `_sum` and `_count`, gauges as they are.
fn exported_names(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let mut fields = line.split_whitespace();
        if (fields.next(), fields.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (fields.next(), fields.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Every `batchscore_…` name in `text`.
fn used_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("batchscore_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_use_only_metrics_the_daemon_exports() {
    let p = Project::sqlite().await;
    configmap_shards(&p).await;
    // A watermark an hour old: the daemon catches up at start, so every series has a value,
    // the job's lag and last success included.
    let hour_ago = rfc3339(chrono::Utc::now() - chrono::TimeDelta::hours(1));
    assert_exit(
        &p.batchscore(&["watermark", "set", "machine_failure", &hour_ago]),
        0,
    );
    let daemon = crate::daemon::Daemon::spawn(p.command(&["daemon", "--listen", "127.0.0.1:0"]));
    let port = daemon.port();
    let mut exposition = String::new();
    eventually(20, "the catch-up run in /metrics", || {
        let got = http_get(port, "/metrics");
        if let Some((200, body)) = &got {
            exposition = body.clone();
        }
        let done = got.is_some_and(|(_, body)| {
            body.contains("batchscore_last_success_timestamp_seconds{")
                && body.contains("batchscore_watermark_lag_seconds{")
        });
        async move { done }
    })
    .await;
    let (code, log) = crate::daemon::stop_daemon(daemon, std::time::Duration::from_secs(10));
    assert_eq!(code, 0, "{log}");
    let exported = exported_names(&exposition);
    assert!(
        exported.contains("batchscore_windows_total"),
        "{exposition}"
    );

    let dashboard_path = Path::new(REPO).join("deploy/monitoring/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap()).unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"].as_str() {
            expressions.push(query.to_owned());
        }
    }
    let file = "monitoring/alerts.yaml";
    let rules = load(file);
    let mut alerts = Vec::new();
    for group in at(&rules, file, "groups").as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            alerts.push(rule["alert"].as_str().unwrap().to_owned());
            expressions.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        alerts,
        [
            "BatchscoreNoRecentSuccess",
            "BatchscoreWatermarkLag",
            "BatchscoreBadRows",
            "BatchscoreDrift",
            "BatchscoreModelPerformance",
            "BatchscoreDaemonDown"
        ]
    );
    // What the dashboard must show.
    let all = expressions.join("\n");
    for needed in [
        "batchscore_windows_total",
        "batchscore_runs_total",
        "batchscore_rows_written_total",
        "batchscore_run_duration_seconds_bucket",
        "batchscore_watermark_lag_seconds",
        "batchscore_rows_bad_total",
        "batchscore_ticks_skipped_total",
        "batchscore_next_run_timestamp_seconds",
        "batchscore_drift_score",
        "batchscore_drift_threshold",
        "batchscore_drift_alerts_total",
        "batchscore_model_metric",
        "batchscore_label_coverage",
        "batchscore_model_metric_alert_below",
    ] {
        assert!(all.contains(needed), "nothing uses {needed}");
    }
    for expression in &expressions {
        for name in used_names(expression) {
            assert!(
                exported.contains(&name),
                "`{name}` (in `{expression}`) is not exported; /metrics has {exported:?}"
            );
        }
    }
}
