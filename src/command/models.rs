//! `batchscore models NAME [--json]`: every model version a job has scored with, newest first,
//! as its ledger rows record them: sha256, source, first and last window, windows and rows
//! scored, and how many windows still hold its scores (those not re-scored since). Its
//! challengers are listed too.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};

use crate::cli::GlobalArgs;
use crate::db::lineage::{ScoredWindow, scored_windows};
use crate::db::{self, Backend};
use crate::time::time_text;
use crate::{spec, with_backend};

/// One model version's use by a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelUse {
    /// `model`, or `challenger`.
    pub role: &'static str,
    pub sha256: String,
    /// Its source when it last scored: a path, or a registry version and alias.
    pub source: Option<String>,
    #[serde(serialize_with = "crate::time::serialize_time")]
    pub first_window_start: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_time")]
    pub last_window_end: DateTime<Utc>,
    pub windows: u64,
    /// Windows whose results are still this model's (not re-scored since); models only.
    pub current_windows: Option<u64>,
    /// Rows written to the results table; models only (a challenger's rows are its table's).
    pub rows_scored: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize_time")]
    pub last_used: DateTime<Utc>,
}

pub async fn run(global: &GlobalArgs, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    let db = db::connect(&global.database_url).await?;
    let windows = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        scored_windows(backend.pool(), &spec.name).await
    }.await)?;
    let uses = model_uses(&windows);
    if json {
        println!("{}", serde_json::to_string_pretty(&uses)?);
        return Ok(ExitCode::SUCCESS);
    }
    if uses.is_empty() {
        println!("{name}: no window committed yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "ROLE",
        "SHA256",
        "SOURCE",
        "FIRST WINDOW",
        "LAST WINDOW",
        "WINDOWS",
        "CURRENT",
        "ROWS",
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for model in uses {
        table.add_row([
            model.role.to_owned(),
            model.sha256[..12].to_owned(),
            or_dash(model.source),
            time_text(model.first_window_start),
            time_text(model.last_window_end),
            model.windows.to_string(),
            or_dash(model.current_windows.map(|n| n.to_string())),
            or_dash(model.rows_scored.map(|n| n.to_string())),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Group committed windows (oldest first) by model and by challenger, newest use first.
pub fn model_uses(windows: &[ScoredWindow]) -> Vec<ModelUse> {
    let mut uses: BTreeMap<(&'static str, String), ModelUse> = BTreeMap::new();
    let mut add = |role, sha: &str, source: &Option<String>, scored: &ScoredWindow| {
        let entry = uses
            .entry((role, sha.to_owned()))
            .or_insert_with(|| ModelUse {
                role,
                sha256: sha.to_owned(),
                source: None,
                first_window_start: scored.window.start,
                last_window_end: scored.window.end,
                windows: 0,
                current_windows: (role == "model").then_some(0),
                rows_scored: (role == "model").then_some(0),
                last_used: scored.finished_at,
            });
        entry.windows += 1;
        entry.first_window_start = entry.first_window_start.min(scored.window.start);
        entry.last_window_end = entry.last_window_end.max(scored.window.end);
        if scored.finished_at >= entry.last_used || entry.source.is_none() {
            entry.source = source.clone().or(entry.source.take());
        }
        entry.last_used = entry.last_used.max(scored.finished_at);
        if let Some(rows) = &mut entry.rows_scored {
            *rows += scored.rows_written;
        }
    };
    // Each window's latest commit: whose results it holds now.
    let mut latest: HashMap<(u32, DateTime<Utc>, DateTime<Utc>), &ScoredWindow> = HashMap::new();
    for scored in windows {
        add("model", &scored.model_sha256, &scored.model_source, scored);
        if let Some(sha) = &scored.challenger_sha256
            && scored.challenger_error.is_none()
        {
            add("challenger", sha, &scored.challenger_source, scored);
        }
        let key = (scored.shard, scored.window.start, scored.window.end);
        let newer = latest
            .get(&key)
            .is_none_or(|seen| scored.finished_at >= seen.finished_at);
        if newer {
            latest.insert(key, scored);
        }
    }
    for scored in latest.values() {
        let key = ("model", scored.model_sha256.clone());
        if let Some(current) = uses.get_mut(&key).and_then(|u| u.current_windows.as_mut()) {
            *current += 1;
        }
    }
    let mut uses: Vec<ModelUse> = uses.into_values().collect();
    uses.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.role.cmp(b.role)));
    uses
}
