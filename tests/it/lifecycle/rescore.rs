//! Repair after a bad release: `run-job --rescore-model SHA` re-scores exactly the committed
//! windows a model version wrote last, with the job's current model, window by window in the
//! usual transaction, and leaves every other window alone.

use super::*;
use crate::scoring::{TimeForm, seed_sensor_readings};

/// Copy `model` to `models/current.onnx` of the project and point the job at it (the team's
/// promotion: a new file at the path the job names).
fn deploy(p: &Project, model: &str) -> String {
    let dir = p.dir.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("current.onnx");
    std::fs::copy(onnx(model), &path).unwrap();
    p.write_job(
        "job",
        &sensor_job(&format!("path = \"{}\"", path.display()), ""),
    );
    file_sha256(&onnx(model))
}

/// A project whose job's "bad" release (the challenger fixture, at the job's path) scored
/// windows 0–2; the project and that model's sha256.
async fn bad_release_scored(kind: Kind) -> Option<(Project, String)> {
    let p = Project::new(kind).await?;
    seed_sensor_readings(&p, TimeForm::usual(kind)).await;
    let bad = deploy(&p, CHALLENGER);
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(2)]),
        0,
    );
    Some((p, bad))
}

async fn rescoring_a_model_rewrites_exactly_the_windows_it_scored(kind: Kind) {
    // The "bad" release scores windows 0–2; the good one, deployed after it, windows 3–4.
    let Some((p, bad)) = bad_release_scored(kind).await else {
        return;
    };
    let good = deploy(&p, CHAMPION);
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(4)]),
        0,
    );
    assert_scored(&p, "predictions", &[(0..3, CHALLENGER), (3..5, CHAMPION)]).await;
    let watermark = p.watermark("job").await;

    // A dry run lists the three windows and writes nothing.
    let prefix = &bad[..10];
    let dry = p.batchscore(&["run-job", "job", "--rescore-model", prefix, "--dry-run"]);
    assert_exit(&dry, 0);
    let listed = stdout(&dry)
        .lines()
        .filter(|l| l.starts_with("window:"))
        .count();
    assert_eq!(listed, 3, "{}", stdout(&dry));
    assert!(
        stdout(&dry).contains(&bad),
        "names the model in full: {}",
        stdout(&dry)
    );
    assert_eq!(window_models(&p).await.len(), 5);

    // Only a model that scored this job is accepted, by a hex prefix.
    for (asked, says) in [("zz", "hex"), ("0000000000", "no committed window")] {
        let out = p.batchscore(&["run-job", "job", "--rescore-model", asked]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{asked}: {}", stderr(&out));
    }

    let out = p.batchscore(&["run-job", "job", "--rescore-model", prefix]);
    assert_exit(&out, 0);
    // Every row is now the good model's, the windows it scored untouched, the watermark kept.
    assert_scored(&p, "predictions", &[(0..5, CHAMPION)]).await;
    let latest: Vec<(String, String)> = ledger_models(&p).await;
    assert_eq!(
        latest.len(),
        8,
        "five windows, then three re-scored: {latest:?}"
    );
    let by = |sha: &str| latest.iter().filter(|(_, m)| m == sha).count();
    assert_eq!((by(&bad), by(&good)), (3, 5), "{latest:?}");
    let mut by_window = std::collections::BTreeMap::new();
    for (window, model) in &latest {
        by_window.insert(window.clone(), model.clone());
    }
    assert!(by_window.values().all(|m| m == &good), "{by_window:?}");
    assert_eq!(p.watermark("job").await, watermark);

    // `models` says nothing of the bad model is current any more.
    let models = models_json(&p, "job");
    let current = |sha: &str| {
        models
            .iter()
            .find(|m| m["sha256"] == sha)
            .unwrap_or_else(|| panic!("{sha} in {models:?}"))["current_windows"]
            .clone()
    };
    assert_eq!(current(&bad), 0);
    assert_eq!(current(&good), 5);

    // Again: nothing is left that the bad model scored.
    let again = p.batchscore(&["run-job", "job", "--rescore-model", prefix]);
    assert_exit(&again, 0);
    assert_eq!(ledger_models(&p).await.len(), 8);
}

on_all_databases!(rescoring_a_model_rewrites_exactly_the_windows_it_scored);

async fn a_rescore_beside_a_scheduled_run_commits_each_window_once(kind: Kind) {
    let Some((p, bad)) = bad_release_scored(kind).await else {
        return;
    };
    deploy(&p, CHAMPION);

    // A rescore and the next scheduled run, started together: each exits 0, or 75 when the
    // other holds the job, and no window is written twice or left half-written.
    let at = after_window(5);
    let rescore = p
        .command(&["run-job", "job", "--rescore-model", &bad])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scheduled = p
        .command(&["run-job", "job", "--at", &at])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let codes: Vec<Option<i32>> = [rescore, scheduled]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code())
        .collect();
    assert!(
        codes.iter().all(|c| matches!(c, Some(0 | 75))),
        "exit codes {codes:?}"
    );
    // Finish whatever the one that yielded left, then every row is the good model's, once.
    assert_exit(
        &p.batchscore(&["run-job", "job", "--rescore-model", &bad]),
        0,
    );
    assert_exit(&p.batchscore(&["run-job", "job", "--at", &at]), 0);
    assert_scored(&p, "predictions", &[(0..6, CHAMPION)]).await;
    let rows = p.count("SELECT COUNT(*) FROM predictions").await;
    assert_eq!(rows, 240);
}

on_all_databases!(a_rescore_beside_a_scheduled_run_commits_each_window_once);

#[tokio::test]
async fn an_ambiguous_prefix_lists_the_models_it_could_mean() {
    let p = Project::sqlite().await;
    seed_sensor_readings(&p, TimeForm::IsoZ).await;
    let bad = deploy(&p, CHALLENGER);
    start_at_t0(&p, "job");
    assert_exit(
        &p.batchscore(&["run-job", "job", "--at", &after_window(1)]),
        0,
    );
    // A second model whose sha256 starts as the first's did (as a hand-edited ledger might).
    let twin = format!("{}{}", &bad[..6], "f".repeat(58));
    p.execute(&format!(
        "UPDATE batchscore_runs SET model_sha256 = '{twin}' WHERE window_start = (SELECT MAX(window_start) FROM batchscore_runs)"
    ))
    .await;
    let out = p.batchscore(&["run-job", "job", "--rescore-model", &bad[..6]]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("ambiguous")
            && stderr(&out).contains(&bad)
            && stderr(&out).contains(&twin),
        "{}",
        stderr(&out)
    );
    // More digits settle it.
    assert_exit(
        &p.batchscore(&["run-job", "job", "--rescore-model", &bad[..12], "--dry-run"]),
        0,
    );
}
