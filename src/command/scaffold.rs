//! `batchscore jobs new NAME --model PATH --table TABLE` (or `--query SQL`): write a job file
//! from the model's inputs and outputs and the source's columns, ready for `jobs validate`.
//!
//! What it can tell from the model and the catalog it writes as settings: the key (the primary
//! key), the timestamp (the first time column, an indexed one first), the features (the model's
//! inputs by name, or as many fitting columns as a single matrix input takes, in table order),
//! one result column per output (per column of a 2-D output, per class of a ZipMap). What it
//! cannot tell it writes as a commented choice, and every line a person should check says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ort::value::ValueType;

use crate::cli::GlobalArgs;
use crate::db::{self, Backend, SourceHints};
use crate::element::Element;
use crate::error::ConfigError;
use crate::ident::Ident;
use crate::model::{Labels, Model, ModelInput};
use crate::source::{CellType, ColumnKind};
use crate::spec::{self, JobSpec, RESULT_META_COLUMNS};
use crate::with_backend;

/// What `jobs new` was asked for.
pub struct NewJob {
    pub name: String,
    pub model: PathBuf,
    pub table: Option<String>,
    pub query: Option<String>,
    pub force: bool,
}

pub async fn run(global: &GlobalArgs, new: NewJob) -> anyhow::Result<ExitCode> {
    let name = new.name.as_str();
    let problem = |p: String| ConfigError::job(name, p);
    Ident::parse(name).map_err(|e| problem(format!("not a job name: {e}")))?;
    let path = global.jobs_dir.join(format!("{name}.toml"));
    if path.exists() && !new.force {
        return Err(problem(format!(
            "{} exists: pass --force to replace it",
            path.display()
        ))
        .into());
    }
    let model_path = std::fs::canonicalize(&new.model)
        .map_err(|e| problem(format!("model {}: {e}", new.model.display())))?;
    // The job file names the model relative to the jobs directory's parent, as it reads it.
    let base = global
        .jobs_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shown_model = std::fs::canonicalize(base)
        .ok()
        .and_then(|base| model_path.strip_prefix(base).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| model_path.clone());
    let source = match (&new.table, &new.query) {
        (Some(table), None) => format!("table = {}", toml_string(table)),
        (None, Some(query)) => format!("query = {}", toml_string(query)),
        _ => unreachable!("clap requires exactly one of --table and --query"),
    };
    // A job file of the source alone, to describe it through the same code a run uses.
    let probe = format!(
        "schedule = \"0 * * * *\"\n[source]\n{source}\nkey = \"k\"\ntimestamp = \"t\"\nfeatures = [\"f\"]\n\
         [window]\nsize = \"1h\"\n[model]\npath = {}\n[outputs]\np = \"p\"\n[sink]\ntable = \"r\"\n",
        toml_string(&model_path.to_string_lossy())
    );
    let probe = spec::parse_job(name, &probe, base).map_err(problem)?;
    let model = Model::open(name, &model_path, None)?;
    let db = db::connect(&global.database_url).await?;
    let (columns, hints) = with_backend!(&db, backend => describe(backend, &probe).await)?;

    let text = job_file(name, &new, &source, &shown_model, &model, &columns, &hints);
    // With a key and a timestamp found, what is written must parse: a file this command cannot
    // read back would be a bug here. Without them, the file says what to fill in.
    let decided = hints.primary_key.is_some() && !hints.times.is_empty();
    if let Err(e) = spec::parse_job(name, &text, base)
        && decided
    {
        anyhow::bail!("the job file written for {name} does not parse ({e}):\n{text}");
    }
    std::fs::create_dir_all(&global.jobs_dir)?;
    std::fs::write(&path, &text)?;
    println!("wrote {}:\n\n{text}", path.display());
    println!("check the lines marked `check:`, then run: batchscore jobs validate {name}");
    Ok(ExitCode::SUCCESS)
}

async fn describe<B: Backend>(
    db: &B,
    probe: &JobSpec,
) -> anyhow::Result<(Vec<(String, ColumnKind)>, SourceHints)> {
    let columns = db
        .describe_source(probe)
        .await?
        .map_err(|p| ConfigError::job(&probe.name, p))?;
    let hints = db.source_hints(probe, &columns).await?;
    Ok((columns, hints))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A result column's name from an output's (and a class's) name: lowercase letters, digits and
/// underscores, not starting with a digit.
fn column_name(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("_")
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '_',
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert(0, '_');
    }
    name
}

/// The element and dimensions of a tensor input or output.
fn tensor(dtype: &ValueType) -> Option<(Option<Element>, Vec<i64>)> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => Some((Element::of(*ty), shape.to_vec())),
        _ => None,
    }
}

fn fits(input: &ModelInput, kind: &ColumnKind) -> bool {
    tensor(&input.dtype)
        .and_then(|(element, _)| element)
        .is_some_and(|element| CellType::for_element(element).accepts(kind))
}

fn job_file(
    name: &str,
    new: &NewJob,
    source: &str,
    model_path: &Path,
    model: &Model,
    columns: &[(String, ColumnKind)],
    hints: &SourceHints,
) -> String {
    let mut out = String::new();
    let what = match (&new.table, &new.query) {
        (Some(table), _) => format!("--table {table}"),
        _ => "--query …".to_owned(),
    };
    let _ = writeln!(
        out,
        "# Written by `batchscore jobs new {name} --model {} {what}`.\n\
         # Check every line marked `check:`, then run `batchscore jobs validate {name}`.",
        new.model.display()
    );
    let _ = writeln!(
        out,
        "description = {}",
        toml_string(&format!("{name}: {}", model_path.display()))
    );
    let _ = writeln!(
        out,
        "schedule = \"*/30 * * * *\"         # check: how often to score (cron: 5 fields, or 6 with seconds first)"
    );
    let _ = writeln!(
        out,
        "timezone = \"UTC\"                  # check: the zone the schedule is read in (an IANA name)\n"
    );

    // The source: key, timestamp, features.
    let _ = writeln!(out, "[source]\n{source}");
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let key = match &hints.primary_key {
        Some(key) => {
            let _ = writeln!(
                out,
                "key = {}                 # the primary key",
                toml_string(key)
            );
            Some(key.clone())
        }
        None => {
            // A query has no primary key; a column named like one is a choice to confirm.
            let likely = columns.iter().find(|(c, kind)| {
                (c == "id" || c.ends_with("_id"))
                    && matches!(kind, ColumnKind::Integer | ColumnKind::Text)
            });
            match likely {
                Some((c, _)) => {
                    let _ = writeln!(
                        out,
                        "key = {}                 # check: no primary key was found; this column looks like one and must be unique per row",
                        toml_string(c)
                    );
                    Some(c.clone())
                }
                None => {
                    let _ = writeln!(
                        out,
                        "key = \"\"                   # check: choose the column that identifies a row (integer or text), one of: {}",
                        names.join(", ")
                    );
                    None
                }
            }
        }
    };
    let timestamp = hints
        .times
        .iter()
        .find(|(_, indexed)| *indexed)
        .or(hints.times.first())
        .map(|(c, _)| c.clone());
    match &timestamp {
        Some(ts) => {
            let indexed = hints.times.iter().any(|(c, i)| c == ts && *i);
            let others: Vec<&str> = hints
                .times
                .iter()
                .map(|(c, _)| c.as_str())
                .filter(|c| c != ts)
                .collect();
            let mut note = match indexed {
                true => "check: when a row arrives; it is indexed".to_owned(),
                false => {
                    "check: when a row arrives; index it, or every window reads the whole table"
                        .to_owned()
                }
            };
            if !others.is_empty() {
                let _ = write!(note, " (other time columns: {})", others.join(", "));
            }
            let _ = writeln!(out, "timestamp = {}     # {note}", toml_string(ts));
        }
        None => {
            let _ = writeln!(
                out,
                "timestamp = \"\"             # check: no time column was found; choose the column the window slices on"
            );
        }
    }
    let taken = |c: &str| Some(c) == key.as_deref() || Some(c) == timestamp.as_deref();
    let inputs = &model.inputs;
    let by_name = inputs
        .iter()
        .all(|i| names.contains(&i.name.as_str()) && !taken(&i.name));
    if by_name {
        let listed: Vec<String> = inputs.iter().map(|i| toml_string(&i.name)).collect();
        let _ = writeln!(
            out,
            "features = [{}]   # the model's inputs, matched to columns by name",
            listed.join(", ")
        );
    } else if let [input] = inputs.as_slice()
        && let Some((_, dims)) = tensor(&input.dtype)
        && dims.len() == 2
    {
        // Identifiers (`id`, `…_id`) are rarely features: they come last.
        let id_like = |c: &str| c == "id" || c.ends_with("_id");
        let mut fitting: Vec<&str> = columns
            .iter()
            .filter(|(c, kind)| !taken(c) && fits(input, kind))
            .map(|(c, _)| c.as_str())
            .collect();
        fitting.sort_by_key(|c| id_like(c));
        let width = usize::try_from(dims[1]).ok().filter(|w| *w > 0);
        let chosen: Vec<&str> = fitting
            .iter()
            .copied()
            .take(width.unwrap_or(fitting.len()))
            .collect();
        let listed: Vec<String> = chosen.iter().map(|c| toml_string(c)).collect();
        let note = match width {
            Some(w) if fitting.len() == w => format!(
                "check: the {w} columns input `{}` takes, in table order: it must be the order the model was trained on",
                input.name
            ),
            Some(w) if fitting.len() > w => format!(
                "check: input `{}` takes {w} columns; these are the first {w} that fit, in table order, identifiers last (the others: {})",
                input.name,
                fitting[w..].join(", ")
            ),
            Some(w) => format!(
                "check: input `{}` takes {w} columns, but only {} fit",
                input.name,
                fitting.len()
            ),
            None => format!(
                "check: input `{}` does not say how many columns it takes; these are every column that fits",
                input.name
            ),
        };
        let _ = writeln!(out, "features = [{}]   # {note}", listed.join(", "));
    } else {
        let fitting: Vec<String> = columns
            .iter()
            .filter(|(c, _)| !taken(c))
            .map(|(c, _)| toml_string(c))
            .collect();
        let _ = writeln!(
            out,
            "features = [{}]   # check: the model's inputs ({}) are not named after columns: map each input to its columns under [inputs] below",
            fitting.join(", "),
            inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        out,
        "# chunk_rows = 10000               # rows per chunk: memory follows this, not the window\n\
         # shards = 1                       # split the job by key over N processes or machines\n"
    );
    if !by_name && inputs.len() > 1 {
        let _ = writeln!(
            out,
            "# [inputs]                         # check: which columns feed each input, in order"
        );
        for input in inputs {
            let _ = writeln!(out, "# {} = [\"…\"]", input.name);
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(
        out,
        "[window]\n\
         size = \"30m\"                       # check: the schedule's period, so each run scores the rows since the last\n\
         lateness = \"2m\"                    # check: how late rows arrive; rows younger than this wait for the next run\n\
         catch_up = \"all\"                   # after missed runs: \"all\" scores each missed window, \"latest\" only the newest\n"
    );
    let _ = writeln!(
        out,
        "[model]\npath = {}\n",
        toml_string(&model_path.to_string_lossy())
    );

    let _ = writeln!(out, "[outputs]");
    let reserved = |column: &str| {
        Some(column) == key.as_deref() || RESULT_META_COLUMNS.iter().any(|(c, _)| *c == column)
    };
    for (output, dtype) in model.outputs() {
        let mut lines: Vec<(String, String, String)> = Vec::new(); // (column, reference, note)
        match (dtype, model.zipmap(output)) {
            (ValueType::Sequence(_), Some(Labels::Integer(labels))) => {
                for label in labels {
                    lines.push((
                        column_name(&[output, &label.to_string()]),
                        format!("{output}[{label}]"),
                        format!("class {label}"),
                    ));
                }
            }
            (ValueType::Sequence(_), Some(Labels::Text(labels))) => {
                for label in labels {
                    lines.push((
                        column_name(&[output, label]),
                        format!("{output}[{label:?}]"),
                        format!("class {label:?}"),
                    ));
                }
            }
            _ => match tensor(dtype).map(|(_, dims)| dims) {
                Some(dims) if dims.len() == 1 || (dims.len() == 2 && dims[1] == 1) => {
                    lines.push((column_name(&[output]), output.clone(), String::new()));
                }
                Some(dims) if dims.len() == 2 && dims[1] > 1 => {
                    for i in 0..dims[1] {
                        lines.push((
                            column_name(&[output, &i.to_string()]),
                            format!("{output}[{i}]"),
                            format!("column {i}"),
                        ));
                    }
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "# {} = \"{output}[0]\"   # check: {} does not say how many columns it has: one line per column you want",
                        column_name(&[output, "0"]),
                        model.describe(output)
                    );
                }
            },
        }
        for (column, reference, note) in lines {
            let column = match reserved(&column) {
                true => format!("{column}_out"),
                false => column,
            };
            let reference = toml_string(&reference);
            let described = model.describe(output);
            let note = match note.is_empty() {
                true => described,
                false => format!("{note} of {described}"),
            };
            let _ = writeln!(out, "{column} = {reference}   # {note}");
        }
    }
    let _ = writeln!(
        out,
        "\n[sink]\ntable = {}   # check: created on the first run if it does not exist",
        toml_string(&format!("{name}_predictions"))
    );
    align_comments(&out)
}

/// Line up the comments after settings, for a file people read.
fn align_comments(text: &str) -> String {
    let split = |line: &str| -> Option<(String, String)> {
        let (setting, comment) = line
            .split_once("   # ")
            .or_else(|| line.split_once("  # "))?;
        (!setting.starts_with('#')).then(|| (setting.trim_end().to_owned(), comment.to_owned()))
    };
    let width = text
        .lines()
        .filter_map(split)
        .map(|(setting, _)| setting.chars().count())
        .filter(|w| *w <= 40)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        match split(line) {
            Some((setting, comment)) => {
                let _ = writeln!(out, "{setting:width$}  # {comment}");
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::column_name;

    #[test]
    fn result_columns_are_identifiers() {
        assert_eq!(
            column_name(&["output_probability", "north"]),
            "output_probability_north"
        );
        assert_eq!(column_name(&["Probabilities", "1"]), "probabilities_1");
        assert_eq!(column_name(&["p", "Süd-Ost"]), "p_s_d_ost");
        assert_eq!(column_name(&["0out"]), "_0out");
    }
}
