//! `batchscore jobs new NAME --model PATH --table TABLE` (or `--query SQL`; or `--model
//! models:/NAME@ALIAS`, a registry's): write a job file from the model's inputs and outputs and
//! the source's columns, ready for `jobs validate`.
//!
//! What it can tell from the model and the catalog it writes as settings: the key (the primary
//! key), the timestamp (the first time column, an indexed one first), the features (the model's
//! inputs by name, or as many fitting columns as a single matrix input takes, in table order),
//! one result column per output (per column of a 2-D output, per class of a ZipMap). What it
//! cannot tell it writes as a commented choice, and every line a person should check says so.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use ort::value::ValueType;

use crate::cli::GlobalArgs;
use crate::db::{self, Backend, SourceHints};
use crate::element::Element;
use crate::error::ConfigError;
use crate::ident::Ident;
use crate::model::{Labels, Model, ModelInput};
use crate::source::{CellType, ColumnKind, SourceColumns};
use crate::spec::{self, JobSpec, RegistryUri, is_lineage_column};
use crate::with_backend;

/// What `jobs new` was asked for.
pub struct NewJob {
    pub name: String,
    /// A model file, or a registry URI (`models:/…`).
    pub model: String,
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
    // The job file names a model file relative to the jobs directory's parent, as it reads it.
    let base = global
        .jobs_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (model_line, model_shown) = model_setting(&new.model, base).map_err(problem)?;
    let source = match (&new.table, &new.query) {
        (Some(table), None) => format!("table = {}", toml_string(table)),
        (None, Some(query)) => format!("query = {}", toml_string(query)),
        _ => unreachable!("clap requires exactly one of --table and --query"),
    };
    // A job file of the source alone, to describe it through the same code a run uses.
    let probe = format!(
        "schedule = \"0 * * * *\"\n[source]\n{source}\nkey = \"k\"\ntimestamp = \"t\"\nfeatures = [\"f\"]\n\
         [window]\nsize = \"1h\"\n[model]\n{model_line}\n[outputs]\np = \"p\"\n[sink]\ntable = \"r\"\n"
    );
    let probe = spec::parse_job(name, &probe, base).map_err(problem)?;
    let model = Model::load(name, &probe.model).await?;
    let db = db::connect(&global.database_url).await?;
    let (columns, hints) = with_backend!(&db, backend => describe(backend, &probe).await)?;

    let text = job_file(&Draft {
        name,
        new: &new,
        source: &source,
        model_line: &model_line,
        model_shown: &model_shown,
        model: &model,
        columns: &columns,
        hints: &hints,
    });
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

/// The `[model]` line for `--model`, and the model as the job's description names it: a
/// registry URI as it is, a file relative to `base` where it lies under it.
fn model_setting(model: &str, base: &Path) -> Result<(String, String), String> {
    if model.starts_with("models:/") {
        let uri = RegistryUri::parse(model)?;
        return Ok((
            format!("uri = {}", toml_string(&uri.to_string())),
            uri.to_string(),
        ));
    }
    let path = std::fs::canonicalize(model).map_err(|e| format!("model {model}: {e}"))?;
    let shown = std::fs::canonicalize(base)
        .ok()
        .and_then(|base| path.strip_prefix(base).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.clone());
    Ok((
        format!("path = {}", toml_string(&shown.to_string_lossy())),
        shown.display().to_string(),
    ))
}

async fn describe<B: Backend>(
    db: &B,
    probe: &JobSpec,
) -> anyhow::Result<(SourceColumns, SourceHints)> {
    let columns = db.describe_source(probe).await?;
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

/// What a job file is written from: the command's arguments, the model, and the source as the
/// database describes it.
struct Draft<'a> {
    name: &'a str,
    new: &'a NewJob,
    /// The `[source]` line naming the table or the query.
    source: &'a str,
    /// The `[model]` line: `path = …` or `uri = …`.
    model_line: &'a str,
    /// The model as the description names it.
    model_shown: &'a str,
    model: &'a Model,
    columns: &'a SourceColumns,
    hints: &'a SourceHints,
}

/// The job file's text: every setting filled in as far as the model and the source say, each
/// guess marked `check:`.
fn job_file(draft: &Draft) -> String {
    let mut out = String::new();
    draft.header(&mut out);
    let key = draft.key(&mut out);
    let timestamp = draft.timestamp(&mut out);
    let taken = |c: &str| Some(c) == key.as_deref() || Some(c) == timestamp.as_deref();
    draft.features(&mut out, &taken);
    let _ = writeln!(
        out,
        "[window]\n\
         size = \"30m\"                       # check: the schedule's period, so each run scores the rows since the last\n\
         lateness = \"2m\"                    # check: how late rows arrive; rows younger than this wait for the next run\n\
         catch_up = \"all\"                   # after missed runs: \"all\" scores each missed window, \"latest\" only the newest\n"
    );
    let _ = writeln!(out, "[model]\n{}\n", draft.model_line);
    draft.outputs(&mut out, key.as_deref());
    let _ = writeln!(
        out,
        "\n[sink]\ntable = {}   # check: created on the first run if it does not exist",
        toml_string(&format!("{}_predictions", draft.name))
    );
    align_comments(&out)
}

impl Draft<'_> {
    fn header(&self, out: &mut String) {
        let name = self.name;
        let what = match (&self.new.table, &self.new.query) {
            (Some(table), _) => format!("--table {table}"),
            _ => "--query …".to_owned(),
        };
        let _ = writeln!(
            out,
            "# Written by `batchscore jobs new {name} --model {} {what}`.\n\
             # Check every line marked `check:`, then run `batchscore jobs validate {name}`.",
            self.new.model
        );
        let _ = writeln!(
            out,
            "description = {}",
            toml_string(&format!("{name}: {}", self.model_shown))
        );
        let _ = writeln!(
            out,
            "schedule = \"*/30 * * * *\"         # check: how often to score (cron: 5 fields, or 6 with seconds first)"
        );
        let _ = writeln!(
            out,
            "timezone = \"UTC\"                  # check: the zone the schedule is read in (an IANA name)\n"
        );
        let _ = writeln!(out, "[source]\n{}", self.source);
    }

    /// The `key` line: the primary key, or a column that looks like one; the key chosen.
    fn key(&self, out: &mut String) -> Option<String> {
        if let Some(key) = &self.hints.primary_key {
            let _ = writeln!(
                out,
                "key = {}                 # the primary key",
                toml_string(key)
            );
            return Some(key.clone());
        }
        // A query has no primary key; a column named like one is a choice to confirm.
        let likely = self.columns.iter().find(|(c, kind)| {
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
                let names: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
                let _ = writeln!(
                    out,
                    "key = \"\"                   # check: choose the column that identifies a row (integer or text), one of: {}",
                    names.join(", ")
                );
                None
            }
        }
    }

    /// The `timestamp` line: the first indexed time column, else the first time column.
    fn timestamp(&self, out: &mut String) -> Option<String> {
        let times = &self.hints.times;
        let timestamp = times
            .iter()
            .find(|(_, indexed)| *indexed)
            .or(times.first())
            .map(|(c, _)| c.clone());
        let Some(ts) = &timestamp else {
            let _ = writeln!(
                out,
                "timestamp = \"\"             # check: no time column was found; choose the column the window slices on"
            );
            return None;
        };
        let indexed = times.iter().any(|(c, i)| c == ts && *i);
        let others: Vec<&str> = times
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| c != ts)
            .collect();
        let mut note = match indexed {
            true => "check: when a row arrives; it is indexed".to_owned(),
            false => "check: when a row arrives; index it, or every window reads the whole table"
                .to_owned(),
        };
        if !others.is_empty() {
            let _ = write!(note, " (other time columns: {})", others.join(", "));
        }
        let _ = writeln!(out, "timestamp = {}     # {note}", toml_string(ts));
        timestamp
    }

    /// The `features` line (columns the key and timestamp have not `taken`), the commented
    /// `chunk_rows` and `shards`, and `[inputs]` when the model's inputs are not columns.
    fn features(&self, out: &mut String, taken: &dyn Fn(&str) -> bool) {
        let names: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
        let inputs = &self.model.inputs;
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
            self.matrix_features(out, input, dims[1], taken);
        } else {
            let fitting: Vec<String> = self
                .columns
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
    }

    /// The `features` of a single matrix input `[N, width]`: the columns that fit it, in table
    /// order, identifiers (`id`, `…_id`, rarely features) last.
    fn matrix_features(
        &self,
        out: &mut String,
        input: &ModelInput,
        width: i64,
        taken: &dyn Fn(&str) -> bool,
    ) {
        let id_like = |c: &str| c == "id" || c.ends_with("_id");
        let mut fitting: Vec<&str> = self
            .columns
            .iter()
            .filter(|(c, kind)| !taken(c) && fits(input, kind))
            .map(|(c, _)| c.as_str())
            .collect();
        fitting.sort_by_key(|c| id_like(c));
        let width = usize::try_from(width).ok().filter(|w| *w > 0);
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
    }

    /// `[outputs]`: one result column per 1-D output, per column of a 2-D one, per class of a
    /// ZipMap; a name batchscore writes itself (or the key's) gets `_out`.
    fn outputs(&self, out: &mut String, key: Option<&str>) {
        let model = self.model;
        let _ = writeln!(out, "[outputs]");
        let reserved = |column: &str| Some(column) == key || is_lineage_column(column);
        for (output, dtype) in model.outputs() {
            let lines = match output_lines(model, output, dtype) {
                Some(lines) => lines,
                None => {
                    let _ = writeln!(
                        out,
                        "# {} = \"{output}[0]\"   # check: {} does not say how many columns it has: one line per column you want",
                        column_name(&[output, "0"]),
                        model.describe(output)
                    );
                    continue;
                }
            };
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
    }
}

/// The result columns one output fills: (column, reference, note); `None` when its shape does
/// not say how many columns it has.
fn output_lines(
    model: &Model,
    output: &str,
    dtype: &ValueType,
) -> Option<Vec<(String, String, String)>> {
    let lines = match (dtype, model.zipmap(output)) {
        (ValueType::Sequence(_), Some(Labels::Integer(labels))) => labels
            .iter()
            .map(|label| {
                (
                    column_name(&[output, &label.to_string()]),
                    format!("{output}[{label}]"),
                    format!("class {label}"),
                )
            })
            .collect(),
        (ValueType::Sequence(_), Some(Labels::Text(labels))) => labels
            .iter()
            .map(|label| {
                (
                    column_name(&[output, label]),
                    format!("{output}[{label:?}]"),
                    format!("class {label:?}"),
                )
            })
            .collect(),
        _ => match tensor(dtype).map(|(_, dims)| dims)? {
            dims if dims.len() == 1 || (dims.len() == 2 && dims[1] == 1) => {
                vec![(column_name(&[output]), output.to_owned(), String::new())]
            }
            dims if dims.len() == 2 && dims[1] > 1 => (0..dims[1])
                .map(|i| {
                    (
                        column_name(&[output, &i.to_string()]),
                        format!("{output}[{i}]"),
                        format!("column {i}"),
                    )
                })
                .collect(),
            _ => return None,
        },
    };
    Some(lines)
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
