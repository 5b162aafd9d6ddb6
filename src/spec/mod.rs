//! Job files: `jobs/NAME.toml` parsed, then validated into a checked [`JobSpec`].
//!
//! Everything that can be checked from the file alone is checked here (TOML syntax, unknown
//! keys, cron expression, time zone, durations, SQL names, output references), so that later
//! stages only ever see a well-formed job. Checks that need the model or the database live in
//! [`crate::job`].

pub mod labels;
pub mod model;
pub mod monitor;
mod sink;

use chrono::TimeDelta;
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;
use std::path::Path;

use self::labels::{LabelsFile, LabelsSpec};
use self::model::{ChallengerFile, ModelFile, check_challenger, check_model};
pub use self::model::{ChallengerSpec, ModelSource, ModelSpec, RegistryUri, RegistryVersion};
use self::monitor::{MonitorFile, MonitorSpec};
pub use self::sink::{LineageColumns, MetaKind, SinkSpec, is_lineage_column};
use self::sink::{SinkFile, check_sink};
use crate::error::ConfigError;
use crate::ident::{Ident, TableName};

/// Default rows per chunk: large enough that ONNX Runtime and the database work in bulk, small
/// enough that a chunk of a few dozen features stays in the low megabytes.
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;
/// The largest `chunk_rows`: memory follows it (each chunk is built whole, two are read ahead).
pub const MAX_CHUNK_ROWS: usize = 1_000_000;
/// The largest `window.max_catch_up`: a run plans its windows up front.
pub const MAX_CATCH_UP: usize = 100_000;
/// The longest `window.size` and `window.lateness`, 100 years: longer ones are mistakes, and
/// windows must stay inside the times every database stores.
const MAX_DURATION: TimeDelta = TimeDelta::days(36_525);

/// A job file after every file-level check passed.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule: Schedule,
    pub source: SourceSpec,
    pub window: WindowSpec,
    pub model: ModelSpec,
    /// `[challenger]`: a second model scored on the same windows, into a table of its own.
    pub challenger: Option<ChallengerSpec>,
    /// `[inputs]`: which columns feed which model input, when the job says so; otherwise the
    /// model's inputs are matched to `source.features` when the model is loaded.
    pub inputs: Option<Vec<InputSpec>>,
    pub outputs: Vec<OutputSpec>,
    pub sink: SinkSpec,
    pub bad_rows: BadRowsSpec,
    /// `[monitor]`: profiles and drift checks (see [`monitor`]).
    pub monitor: MonitorSpec,
    /// `[labels]`: where the truth arrives, for realized performance (see [`labels`]).
    pub labels: Option<LabelsSpec>,
    /// `[alerts]`: the job's own bounds for the alerts of `alerts.toml` (see [`crate::alerts`]).
    pub alerts: JobAlerts,
}

/// `[alerts]` in a job file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobAlerts {
    /// The watermark may lag this far behind now before the job is `late`; unset, twice the
    /// schedule's interval plus the window's lateness.
    pub late_after: Option<TimeDelta>,
}

/// One model input and the feature columns that feed it, as indexes into `source.features`, in
/// the order they make up the input's second dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub columns: Vec<usize>,
}

/// What happens to a row that cannot be scored (a NULL, NaN, infinite, non-numeric or
/// out-of-range feature, or a NaN or infinite prediction).
#[derive(Debug, Clone, PartialEq)]
pub struct BadRowsSpec {
    pub policy: BadRowPolicy,
    /// More than this fraction of a window bad fails the window: nothing is written.
    pub max_fraction: f64,
    /// Per feature, in `source.features` order: the value that replaces a bad one, if any.
    pub fill: Vec<Option<Fill>>,
}

/// A `bad_rows.fill` value as written; whether it suits its column's input is checked when the
/// model is known (a text fill for a string input, a number for a numeric one).
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl std::fmt::Display for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fill::Number(v) => write!(f, "{v}"),
            Fill::Text(t) => write!(f, "{t:?}"),
            Fill::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Write the row's key, the reason and its raw features to `batchscore_quarantine`.
    Quarantine,
    /// Count and log it only.
    Skip,
    /// Fail the whole window.
    Fail,
}

impl BadRowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            BadRowPolicy::Quarantine => "quarantine",
            BadRowPolicy::Skip => "skip",
            BadRowPolicy::Fail => "fail",
        }
    }
}

/// The most shards a job may have (`[source] shards`, see [`crate::shard`]): far more than any
/// cluster runs at once for one job, and few enough to read them all in `watermark show`.
pub const MAX_SHARDS: u32 = 1024;

/// Default `bad_rows.max_fraction`: one row in a hundred.
pub const DEFAULT_MAX_BAD_FRACTION: f64 = 0.01;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub cron: Cron,
    pub timezone: Tz,
}

#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub from: SourceFrom,
    pub key: Ident,
    pub timestamp: Ident,
    pub features: Vec<Ident>,
    pub chunk_rows: usize,
    /// `shards = N`: the job runs as N shards, split by a hash of the key (see [`crate::shard`]).
    pub shards: u32,
}

#[derive(Debug, Clone)]
pub enum SourceFrom {
    Table(TableName),
    /// A single SELECT; `:window_start` and `:window_end` in it are bound to the window's bounds.
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size: TimeDelta,
    pub lateness: TimeDelta,
    pub catch_up: CatchUp,
    /// With `catch_up = "all"`: at most this many windows per run; the rest wait for the next.
    pub max_catch_up: usize,
}

/// What a run does about schedule slots missed since the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Score every missed window, oldest first, each in its own transaction.
    All,
    /// Score only the newest window; record the missed range as skipped in the ledger.
    Latest,
}

/// Default `window.max_catch_up`: two days of 30-minute windows.
pub const DEFAULT_MAX_CATCH_UP: usize = 96;

/// One result column, filled from one ONNX output: a 1-D tensor, one column of a 2-D tensor,
/// or one class of a ZipMap (a sequence of maps from class label to probability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub column: Ident,
    pub output: String,
    pub pick: Option<Pick>,
}

/// What `[…]` after an output's name picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// `probabilities[1]`: a column of a 2-D tensor, or an integer class label of a ZipMap.
    Index(i64),
    /// `output_probability["north"]`: a string class label of a ZipMap.
    Label(String),
}

impl OutputSpec {
    /// The reference as written in the job file: `probabilities[1]`, `p["north"]`.
    pub fn reference(&self) -> String {
        match &self.pick {
            Some(Pick::Index(i)) => format!("{}[{i}]", self.output),
            Some(Pick::Label(label)) => format!("{}[{label:?}]", self.output),
            None => self.output.clone(),
        }
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    /// For the people reading the file; parsed so that the rest of the file is checked.
    #[allow(dead_code)]
    description: Option<String>,
    schedule: String,
    #[serde(default = "utc")]
    timezone: String,
    source: SourceFile,
    window: WindowFile,
    model: ModelFile,
    challenger: Option<ChallengerFile>,
    inputs: Option<toml::Table>,
    outputs: toml::Table,
    sink: SinkFile,
    #[serde(default)]
    bad_rows: BadRowsFile,
    #[serde(default)]
    monitor: MonitorFile,
    labels: Option<LabelsFile>,
    #[serde(default)]
    alerts: AlertsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    late_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BadRowsFile {
    policy: Option<BadRowPolicy>,
    max_fraction: Option<f64>,
    #[serde(default)]
    fill: toml::Table,
}

fn utc() -> String {
    "UTC".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    table: Option<String>,
    query: Option<String>,
    key: String,
    timestamp: String,
    features: Option<Vec<String>>,
    chunk_rows: Option<usize>,
    shards: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    size: String,
    lateness: Option<String>,
    catch_up: Option<CatchUp>,
    max_catch_up: Option<usize>,
}

// ---- loading -------------------------------------------------------------------------------

/// The names of all job files in `jobs_dir`, sorted.
pub fn job_names(jobs_dir: &Path) -> Result<Vec<String>, ConfigError> {
    let entries = std::fs::read_dir(jobs_dir).map_err(|e| ConfigError::JobFile {
        path: jobs_dir.to_owned(),
        problem: format!(
            "cannot read the jobs directory: {e} (set --jobs-dir or BATCHSCORE_JOBS_DIR)"
        ),
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .filter_map(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Load and check `jobs_dir/NAME.toml`.
pub fn load_job(jobs_dir: &Path, name: &str) -> Result<JobSpec, ConfigError> {
    let path = jobs_dir.join(format!("{name}.toml"));
    // A name with a path separator would read a file outside the jobs directory.
    if name.contains(['/', '\\']) || !path.is_file() {
        return Err(ConfigError::UnknownJob {
            name: name.to_owned(),
            dir: jobs_dir.to_owned(),
            known: match job_names(jobs_dir) {
                Ok(names) if !names.is_empty() => names.join(", "),
                _ => "none".to_owned(),
            },
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::JobFile {
        path: path.clone(),
        problem: format!("cannot read: {e}"),
    })?;
    let model_base = std::path::absolute(jobs_dir)
        .ok()
        .and_then(|dir| dir.parent().map(Path::to_owned))
        .unwrap_or_default();
    match parse_job(name, &text, &model_base) {
        Ok(spec) => Ok(spec),
        Err(problem) => Err(ConfigError::JobFile {
            path,
            problem: shortened(&problem),
        }),
    }
}

/// A problem as it is shown: every value it quotes (between backticks) cut to its start, and
/// every line (toml's messages quote the file's line) to 300 characters, so a value of a
/// megabyte makes an error of a few lines, not of a megabyte.
pub fn shortened(problem: &str) -> String {
    fn cut(text: &str, keep: usize) -> String {
        match text.char_indices().nth(keep) {
            Some((at, _)) => format!("{}… ({} characters)", &text[..at], text.chars().count()),
            None => text.to_owned(),
        }
    }
    let quoted: Vec<String> = problem
        .split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            1 => cut(part, 60),
            _ => part.to_owned(),
        })
        .collect();
    quoted
        .join("`")
        .lines()
        .map(|line| cut(line, 300))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest job name, in characters: what batchscore's tables hold on MySQL (`VARCHAR(64)`),
/// where a longer name was cut short silently, leaving the job busy forever on its own claim.
pub const MAX_JOB_NAME: usize = 64;

/// A job's name (its file's name without `.toml`) is stored in batchscore's tables and in
/// metric labels: at most [`MAX_JOB_NAME`] characters, none of them control characters.
fn check_job_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length > MAX_JOB_NAME {
        return Err(format!(
            "the job's name (its file name) is {length} characters long, more than the \
             {MAX_JOB_NAME} batchscore's tables hold: rename the file"
        ));
    }
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(
            "the job's name (its file name) must be non-empty and free of control characters"
                .to_owned(),
        );
    }
    Ok(())
}

/// Parse a job file's text. `model_base` is where relative model paths start.
pub fn parse_job(name: &str, text: &str, model_base: &Path) -> Result<JobSpec, String> {
    check_job_name(name)?;
    // toml's message already names the line and column and quotes the offending text.
    let file: JobFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;

    let timezone: Tz = file.timezone.parse().map_err(|_| {
        format!(
            "timezone `{}` is not an IANA time zone name like Europe/Berlin or UTC",
            file.timezone
        )
    })?;
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(&file.schedule)
        .map_err(|e| {
            format!(
                "schedule `{}` is not a valid cron expression: {e}",
                file.schedule
            )
        })?;

    let (source, inputs) = check_source(file.source, file.inputs.as_ref())?;
    let window = check_window(&file.window)?;
    let model = check_model(file.model, model_base)?;

    let outputs = check_outputs(&file.outputs, &source.key)?;
    let bad_rows = check_bad_rows(file.bad_rows, &source.features)?;
    let monitor = file.monitor.check()?;
    let sink = check_sink(&file.sink, &window)?;
    let challenger = file
        .challenger
        .map(|c| check_challenger(c, model_base, &sink.table))
        .transpose()?;
    let labels = file.labels.map(|l| l.check(&outputs)).transpose()?;
    let alerts = JobAlerts {
        late_after: match &file.alerts.late_after {
            Some(text) => match parse_duration("alerts.late_after", text)? {
                late if late > TimeDelta::zero() => Some(late),
                _ => return Err(format!("alerts.late_after `{text}` must be longer than 0s")),
            },
            None => None,
        },
    };

    Ok(JobSpec {
        name: name.to_owned(),
        schedule: Schedule {
            expression: file.schedule,
            cron,
            timezone,
        },
        source,
        window,
        model,
        challenger,
        inputs,
        outputs,
        sink,
        bad_rows,
        monitor,
        labels,
        alerts,
    })
}

/// `[window]`: sizes parsed and bounded.
fn check_window(window: &WindowFile) -> Result<WindowSpec, String> {
    let spec = WindowSpec {
        size: parse_duration("window.size", &window.size)?,
        lateness: match &window.lateness {
            Some(text) => parse_duration("window.lateness", text)?,
            None => TimeDelta::zero(),
        },
        catch_up: window.catch_up.unwrap_or(CatchUp::All),
        max_catch_up: window.max_catch_up.unwrap_or(DEFAULT_MAX_CATCH_UP),
    };
    if !(1..=MAX_CATCH_UP).contains(&spec.max_catch_up) {
        return Err(format!(
            "window.max_catch_up must be between 1 and {MAX_CATCH_UP}, not {}",
            spec.max_catch_up
        ));
    }
    if spec.size <= TimeDelta::zero() {
        return Err("window.size must be greater than zero".to_owned());
    }
    for (what, length) in [("size", spec.size), ("lateness", spec.lateness)] {
        if length > MAX_DURATION {
            return Err(format!(
                "window.{what} must be at most 100 years, not {}",
                humantime::format_duration(length.to_std().unwrap_or_default())
            ));
        }
    }

    Ok(spec)
}

fn check_bad_rows(file: BadRowsFile, features: &[Ident]) -> Result<BadRowsSpec, String> {
    let max_fraction = file.max_fraction.unwrap_or(DEFAULT_MAX_BAD_FRACTION);
    if !(0.0..=1.0).contains(&max_fraction) {
        return Err(format!(
            "bad_rows.max_fraction = {max_fraction} must be between 0 and 1"
        ));
    }
    let mut fill = vec![None; features.len()];
    for (column, value) in &file.fill {
        let index = features
            .iter()
            .position(|f| f.as_str() == column)
            .ok_or_else(|| {
                format!("bad_rows.fill.{column}: `{column}` is not one of source.features")
            })?;
        let value = match value {
            toml::Value::String(text) => Fill::Text(text.clone()),
            toml::Value::Boolean(b) => Fill::Bool(*b),
            other => other
                .as_float()
                .or_else(|| other.as_integer().map(|i| i as f64))
                .filter(|v| v.is_finite())
                .map(Fill::Number)
                .ok_or_else(|| {
                    format!("bad_rows.fill.{column} must be a finite number, a string or a boolean")
                })?,
        };
        fill[index] = Some(value);
    }
    Ok(BadRowsSpec {
        policy: file.policy.unwrap_or(BadRowPolicy::Quarantine),
        max_fraction,
        fill,
    })
}

fn check_source(
    file: SourceFile,
    inputs: Option<&toml::Table>,
) -> Result<(SourceSpec, Option<Vec<InputSpec>>), String> {
    let from = match (file.table, file.query) {
        (Some(table), None) => {
            SourceFrom::Table(TableName::parse(&table).map_err(|e| format!("source.table: {e}"))?)
        }
        (None, Some(query)) => SourceFrom::Query(check_query(&query)?),
        (Some(_), Some(_)) => return Err("[source] takes `table` or `query`, not both".to_owned()),
        (None, None) => return Err("[source] needs `table` or `query`".to_owned()),
    };
    let field =
        |what: &str, name: &str| Ident::parse(name).map_err(|e| format!("source.{what}: {e}"));
    let key = field("key", &file.key)?;
    let timestamp = field("timestamp", &file.timestamp)?;
    let listed = match (file.features, inputs) {
        (Some(features), _) => features,
        // With [inputs], the features are the columns it names, input by input (a column named
        // twice is reported by `check_inputs`, which can say which inputs).
        (None, Some(inputs)) => {
            let mut columns: Vec<String> = Vec::new();
            for column in inputs
                .values()
                .filter_map(toml::Value::as_array)
                .flatten()
                .filter_map(toml::Value::as_str)
            {
                if !columns.iter().any(|c| c == column) {
                    columns.push(column.to_owned());
                }
            }
            columns
        }
        (None, None) => {
            return Err(
                "source.features is missing: list the columns the model reads, in its input order"
                    .to_owned(),
            );
        }
    };
    if listed.is_empty() {
        return Err("source.features is empty: list the model's input columns in order".to_owned());
    }
    let mut features = Vec::with_capacity(listed.len());
    for name in &listed {
        let ident = field("features", name)?;
        if features.contains(&ident) {
            return Err(format!("source.features lists `{name}` twice"));
        }
        features.push(ident);
    }
    let inputs = inputs
        .map(|table| check_inputs(table, &features))
        .transpose()?;
    let chunk_rows = file.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
    if !(1..=MAX_CHUNK_ROWS).contains(&chunk_rows) {
        return Err(format!(
            "source.chunk_rows must be between 1 and {MAX_CHUNK_ROWS}, not {chunk_rows}"
        ));
    }
    let shards = file.shards.unwrap_or(1);
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(format!(
            "source.shards must be between 1 and {MAX_SHARDS}, not {shards}"
        ));
    }
    let source = SourceSpec {
        from,
        key,
        timestamp,
        features,
        chunk_rows,
        shards,
    };
    Ok((source, inputs))
}

/// `[inputs]`: `input = ["column", …]` for each model input. Every feature feeds exactly one
/// input; whether the names are the model's is checked when the model is loaded.
fn check_inputs(table: &toml::Table, features: &[Ident]) -> Result<Vec<InputSpec>, String> {
    if table.is_empty() {
        return Err(
            "[inputs] is empty: map each model input to its columns, like numeric = [\"amount\", \"items\"]"
                .to_owned(),
        );
    }
    let mut fed_by: Vec<Option<&str>> = vec![None; features.len()];
    let mut inputs = Vec::with_capacity(table.len());
    for (name, value) in table {
        let names: Option<Vec<&str>> = value
            .as_array()
            .and_then(|columns| columns.iter().map(toml::Value::as_str).collect());
        let names = match names {
            Some(names) if !names.is_empty() => names,
            _ => {
                return Err(format!(
                    "inputs.{name} must be a non-empty list of column names, like [\"amount\"]"
                ));
            }
        };
        let mut columns = Vec::with_capacity(names.len());
        for column in names {
            let index = features
                .iter()
                .position(|f| f.as_str() == column)
                .ok_or_else(|| {
                    format!("inputs.{name}: column `{column}` is not one of source.features")
                })?;
            if let Some(first) = fed_by[index].replace(name) {
                return Err(format!(
                    "inputs.{name}: column `{column}` already feeds input `{first}`; a column feeds one input"
                ));
            }
            columns.push(index);
        }
        inputs.push(InputSpec {
            name: name.clone(),
            columns,
        });
    }
    if let Some(unused) = fed_by.iter().position(Option::is_none) {
        return Err(format!(
            "source.features lists `{}`, but no input in [inputs] reads it",
            features[unused]
        ));
    }
    Ok(inputs)
}

/// `source.query` must be one SELECT (or WITH … SELECT) statement: batchscore wraps it as a
/// subquery, so a second statement could never be meant, and refusing `;` keeps a job file
/// from smuggling one in.
pub(super) fn check_query(query: &str) -> Result<String, String> {
    let trimmed = query.trim().trim_end_matches(';').trim_end();
    let first_word = trimmed
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if first_word != "SELECT" && first_word != "WITH" {
        return Err("source.query must be a single SELECT statement".to_owned());
    }
    if trimmed.contains(';') {
        return Err("source.query must be a single SELECT statement: it contains `;`".to_owned());
    }
    Ok(trimmed.to_owned())
}

fn check_outputs(table: &toml::Table, key: &Ident) -> Result<Vec<OutputSpec>, String> {
    if table.is_empty() {
        return Err(
            "[outputs] is empty: map at least one result column to a model output".to_owned(),
        );
    }
    let mut outputs: Vec<OutputSpec> = Vec::with_capacity(table.len());
    for (column, value) in table {
        let column = Ident::parse(column).map_err(|e| format!("outputs: {e}"))?;
        if &column == key || is_lineage_column(column.as_str()) {
            return Err(format!(
                "outputs.{column}: `{column}` is a column batchscore writes itself; pick another name"
            ));
        }
        let reference = value
            .as_str()
            .ok_or_else(|| format!("outputs.{column} must be a string naming a model output, like \"label\" or \"probabilities[1]\""))?;
        let (output, pick) = parse_output_reference(reference).ok_or_else(|| {
            format!(
                "outputs.{column} = {reference:?} is not `NAME`, `NAME[INDEX]` or `NAME[\"LABEL\"]`"
            )
        })?;
        outputs.push(OutputSpec {
            column,
            output,
            pick,
        });
    }
    Ok(outputs)
}

/// `NAME`, `NAME[INDEX]` or `NAME["LABEL"]` (single quotes too).
fn parse_output_reference(text: &str) -> Option<(String, Option<Pick>)> {
    let text = text.trim();
    let Some(head) = text.strip_suffix(']') else {
        return (!text.is_empty() && !text.contains(['[', ']'])).then(|| (text.to_owned(), None));
    };
    let (name, inside) = head.split_once('[')?;
    let (name, inside) = (name.trim(), inside.trim());
    if name.is_empty() || name.contains(']') {
        return None;
    }
    let quoted = ['"', '\''].iter().find_map(|q| {
        inside
            .strip_prefix(*q)
            .and_then(|rest| rest.strip_suffix(*q))
            .filter(|label| !label.contains(*q))
    });
    let pick = match quoted {
        Some(label) => Pick::Label(label.to_owned()),
        None => Pick::Index(inside.parse::<u32>().ok()?.into()),
    };
    Some((name.to_owned(), Some(pick)))
}

pub(crate) fn parse_duration(what: &str, text: &str) -> Result<TimeDelta, String> {
    let std = humantime::parse_duration(text)
        .map_err(|e| format!("{what} `{text}` is not a duration like 30m, 2h or 90s: {e}"))?;
    TimeDelta::from_std(std).map_err(|_| format!("{what} `{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
description = "Failure risk"
schedule = "*/30 * * * *"
timezone = "Europe/Berlin"

[source]
table = "sensor_readings"
key = "reading_id"
timestamp = "recorded_at"
features = ["temperature", "vibration", "pressure", "rpm"]

[window]
size = "30m"
lateness = "2m"

[model]
path = "models/machine_failure.onnx"

[outputs]
failure_label = "label"
failure_probability = "probabilities[1]"

[sink]
table = "machine_failure_predictions"
"#;

    fn parse(text: &str) -> Result<JobSpec, String> {
        parse_job("machine_failure", text, Path::new("/srv/batchscore"))
    }

    #[test]
    fn problems_quote_values_and_lines_shortened() {
        let long = "x".repeat(1 << 20);
        let shown = shortened(&format!(
            "source.table: `{long}` is not a valid SQL name\n3 | {long}"
        ));
        assert!(shown.len() < 800, "{}", shown.len());
        assert!(
            shown.contains("… (1048576 characters)` is not a valid SQL name"),
            "{shown}"
        );
        assert_eq!(shortened("`short` stays"), "`short` stays");
    }

    #[test]
    fn example_job_parses() {
        let spec = parse(EXAMPLE).unwrap();
        assert_eq!(spec.schedule.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(spec.window.size, TimeDelta::minutes(30));
        assert_eq!(spec.window.lateness, TimeDelta::minutes(2));
        assert_eq!(
            spec.model.source,
            ModelSource::File("/srv/batchscore/models/machine_failure.onnx".into())
        );
        assert_eq!(spec.source.features.len(), 4);
        assert_eq!(spec.outputs[0].reference(), "label");
        assert_eq!(spec.outputs[1].column.as_str(), "failure_probability");
        assert_eq!(spec.outputs[1].pick, Some(Pick::Index(1)));
        assert!(spec.inputs.is_none());
        assert_eq!(spec.source.chunk_rows, DEFAULT_CHUNK_ROWS);
        assert_eq!(spec.window.catch_up, CatchUp::All);
        assert_eq!(spec.bad_rows.policy, BadRowPolicy::Quarantine);
        assert_eq!(spec.bad_rows.max_fraction, DEFAULT_MAX_BAD_FRACTION);
        let filled = parse(&format!(
            "{EXAMPLE}\n[bad_rows]\npolicy = \"skip\"\nmax_fraction = 0.2\nfill = {{ rpm = 1500, vibration = 0.5 }}\n"
        ))
        .unwrap();
        assert_eq!(filled.bad_rows.policy, BadRowPolicy::Skip);
        assert_eq!(
            filled.bad_rows.fill,
            vec![
                None,
                Some(Fill::Number(0.5)),
                None,
                Some(Fill::Number(1500.0))
            ]
        );
        let latest = parse(&EXAMPLE.replace(
            "lateness = \"2m\"",
            "lateness = \"2m\"\ncatch_up = \"latest\"",
        ))
        .unwrap();
        assert_eq!(latest.window.catch_up, CatchUp::Latest);
    }

    #[test]
    fn six_field_cron_with_seconds_parses() {
        let text = EXAMPLE.replace("*/30 * * * *", "*/1 * * * * *");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn file_level_mistakes_are_named() {
        let cases = [
            (
                EXAMPLE.replace("*/30 * * * *", "every 30 minutes"),
                "not a valid cron",
            ),
            (
                EXAMPLE.replace("Europe/Berlin", "Mars/Olympus"),
                "not an IANA time zone",
            ),
            (
                EXAMPLE.replace("size = \"30m\"", "size = \"thirty\""),
                "window.size",
            ),
            (
                EXAMPLE.replace("[window]", "colour = \"red\"\n[window]"),
                "unknown field `colour`",
            ),
            (
                EXAMPLE.replace("\"reading_id\"", "\"id; DROP TABLE x\""),
                "source.key",
            ),
            (
                EXAMPLE.replace("[window]", "shards = 0\n[window]"),
                "source.shards must be between 1 and 1024, not 0",
            ),
            (
                EXAMPLE.replace("\"probabilities[1]\"", "\"probabilities[x]\""),
                "not `NAME`",
            ),
            (
                EXAMPLE.replace("failure_label", "run_id"),
                "batchscore writes itself",
            ),
            (
                EXAMPLE.replace("table = \"sensor_readings\"", "query = \"DELETE FROM t\""),
                "single SELECT",
            ),
            (
                EXAMPLE.replace(
                    "table = \"sensor_readings\"",
                    "query = \"SELECT 1; DROP TABLE t\"",
                ),
                "contains `;`",
            ),
            (
                EXAMPLE.replace("\"pressure\", \"rpm\"", "\"pressure\", \"pressure\""),
                "twice",
            ),
            (
                format!("{EXAMPLE}\n[bad_rows]\nfill = {{ speed = 1 }}\n"),
                "not one of source.features",
            ),
            (
                format!("{EXAMPLE}\n[bad_rows]\nmax_fraction = 2.0\n"),
                "between 0 and 1",
            ),
            (
                format!("{EXAMPLE}\n[bad_rows]\npolicy = \"ignore\"\n"),
                "unknown variant `ignore`",
            ),
        ];
        for (text, expected) in cases {
            let Err(err) = parse(&text) else {
                panic!("expected an error containing {expected:?}")
            };
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let Err(err) = parse("schedule = \"* * * * *\"\n[source\n") else {
            panic!("a syntax error must not parse")
        };
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn output_references() {
        assert_eq!(
            parse_output_reference("label"),
            Some(("label".into(), None))
        );
        assert_eq!(
            parse_output_reference("probabilities[1]"),
            Some(("probabilities".into(), Some(Pick::Index(1))))
        );
        assert_eq!(
            parse_output_reference("p[ 0 ]"),
            Some(("p".into(), Some(Pick::Index(0))))
        );
        assert_eq!(
            parse_output_reference("output_probability[\"north\"]"),
            Some((
                "output_probability".into(),
                Some(Pick::Label("north".into()))
            ))
        );
        assert_eq!(
            parse_output_reference("p['a b']"),
            Some(("p".into(), Some(Pick::Label("a b".into()))))
        );
        assert_eq!(parse_output_reference("[1]"), None);
        assert_eq!(parse_output_reference("p[-1]"), None);
        assert_eq!(parse_output_reference("p]"), None);
        assert_eq!(parse_output_reference("p[\"x]"), None);
        assert_eq!(parse_output_reference("p[north]"), None);
    }

    const PER_COLUMN: &str = r#"
schedule = "*/30 * * * *"
[source]
table = "customers"
key = "id"
timestamp = "ts"
[window]
size = "30m"
[model]
path = "churn.onnx"
[inputs]
numeric = ["amount", "items"]
category = ["region"]
[outputs]
p = "output_probability[1]"
[sink]
table = "churn"
"#;

    #[test]
    fn inputs_name_their_columns_and_imply_the_features() {
        let spec = parse(PER_COLUMN).unwrap();
        let features: Vec<&str> = spec.source.features.iter().map(|f| f.as_str()).collect();
        assert_eq!(features, ["amount", "items", "region"]);
        assert_eq!(
            spec.inputs.unwrap(),
            vec![
                InputSpec {
                    name: "numeric".into(),
                    columns: vec![0, 1]
                },
                InputSpec {
                    name: "category".into(),
                    columns: vec![2]
                },
            ]
        );
        // Listed features may come in another order than [inputs]; indexes follow the list.
        let listed = parse(&PER_COLUMN.replace(
            "timestamp = \"ts\"",
            "timestamp = \"ts\"\nfeatures = [\"region\", \"items\", \"amount\"]",
        ))
        .unwrap();
        assert_eq!(listed.inputs.unwrap()[0].columns, vec![2, 1]);
        let filled = parse(&format!(
            "{PER_COLUMN}\n[bad_rows]\nfill = {{ region = \"unknown\", items = 0 }}\n"
        ))
        .unwrap();
        assert_eq!(
            filled.bad_rows.fill,
            vec![
                None,
                Some(Fill::Number(0.0)),
                Some(Fill::Text("unknown".into()))
            ]
        );
    }

    #[test]
    fn input_mistakes_name_the_input() {
        let with_features = |list: &str| {
            PER_COLUMN.replace(
                "timestamp = \"ts\"",
                &format!("timestamp = \"ts\"\nfeatures = {list}"),
            )
        };
        let cases = [
            (
                PER_COLUMN.replace("[\"region\"]", "[\"region\", \"amount\"]"),
                "inputs.category: column `amount` already feeds input `numeric`",
            ),
            (
                with_features("[\"amount\", \"items\"]"),
                "inputs.category: column `region` is not one of source.features",
            ),
            (
                with_features("[\"amount\", \"items\", \"region\", \"extra\"]"),
                "source.features lists `extra`, but no input in [inputs] reads it",
            ),
            (
                PER_COLUMN.replace("[\"region\"]", "[]"),
                "inputs.category must be a non-empty list",
            ),
            (
                PER_COLUMN.replace("[\"region\"]", "\"region\""),
                "inputs.category must be a non-empty list",
            ),
        ];
        for (text, expected) in cases {
            let Err(err) = parse(&text) else {
                panic!("expected an error containing {expected:?}")
            };
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
