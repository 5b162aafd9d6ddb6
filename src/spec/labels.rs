//! `[labels]` of a job file: where the application keeps the truth about what the job predicted,
//! when it is complete, and which result columns to judge against it. What is computed from it
//! is in [`crate::performance`].

use chrono::TimeDelta;
use serde::Deserialize;

use super::{OutputSpec, SourceFrom, check_query, parse_duration};
use crate::ident::{Ident, TableName};

/// `[labels]`, checked against the job's own result columns (the database's tables are checked
/// by [`crate::performance::check`]).
#[derive(Debug, Clone)]
pub struct LabelsSpec {
    pub from: SourceFrom,
    /// Joins to the job's key.
    pub key: Ident,
    /// The true value.
    pub label: Ident,
    /// When the label became known: of two labels for one key, the later wins.
    pub timestamp: Option<Ident>,
    /// How long after a window ends its labels are complete: until then its figures are
    /// provisional.
    pub maturity: TimeDelta,
    pub task: Task,
    /// Alert when the headline metric (AUC, MAE) falls below / rises above this.
    pub alert_below: Option<f64>,
    pub alert_above: Option<f64>,
}

/// What kind of prediction is judged, and by which result columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Classification {
        /// The result column with the positive class's probability or score.
        score: Ident,
        /// The result column with the predicted label; without one, a score at or above
        /// `threshold` predicts the positive class.
        predicted: Option<Ident>,
        positive: Positive,
        threshold: f64,
    },
    Regression {
        prediction: Ident,
    },
}

impl Task {
    /// The one figure `status` shows, and the alert bounds judge.
    pub fn headline(&self) -> &'static str {
        match self {
            Task::Classification { .. } => "auc",
            Task::Regression { .. } => "mae",
        }
    }
}

/// The positive class's label, as written in the job file.
#[derive(Debug, Clone, PartialEq)]
pub enum Positive {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl Positive {
    /// Whether a label, read as text, is this one. Numbers and booleans compare by value, so
    /// `positive = 1` matches `1`, `1.0` and `true`, and `positive = true` matches `1` and `t`
    /// (what PostgreSQL, MySQL and SQLite make of a boolean).
    pub fn matches(&self, text: &str) -> bool {
        let number = |text: &str| match text.trim() {
            "true" | "t" | "TRUE" => Some(1.0),
            "false" | "f" | "FALSE" => Some(0.0),
            other => other.parse::<f64>().ok(),
        };
        match self {
            Positive::Text(positive) => text == positive,
            // An integer exactly: beyond 2^53 two integers can share one float.
            Positive::Integer(i) => match text.trim().parse::<i64>() {
                Ok(label) => label == *i,
                Err(_) => number(text) == Some(*i as f64),
            },
            Positive::Boolean(b) => number(text) == Some(f64::from(u8::from(*b))),
        }
    }

    /// Whether a label read as an integer is this one: as [`Positive::matches`] its text.
    pub fn matches_integer(&self, label: i64) -> bool {
        match self {
            Positive::Text(positive) => *positive == label.to_string(),
            Positive::Integer(i) => label == *i,
            Positive::Boolean(b) => label == i64::from(*b),
        }
    }

    /// Its spellings in SQL text (for finding it among the labels, cast to text).
    pub fn spellings(&self) -> Vec<String> {
        match self {
            Positive::Text(text) => vec![text.clone()],
            Positive::Integer(1) | Positive::Boolean(true) => {
                ["1", "true", "t", "1.0"].map(str::to_owned).to_vec()
            }
            Positive::Integer(0) | Positive::Boolean(false) => {
                ["0", "false", "f", "0.0"].map(str::to_owned).to_vec()
            }
            Positive::Integer(i) => vec![i.to_string(), format!("{i}.0")],
        }
    }
}

impl std::fmt::Display for Positive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Positive::Text(text) => write!(f, "{text:?}"),
            Positive::Integer(i) => write!(f, "{i}"),
            Positive::Boolean(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LabelsFile {
    table: Option<String>,
    query: Option<String>,
    key: String,
    label: String,
    timestamp: Option<String>,
    maturity: String,
    score: Option<String>,
    predicted: Option<String>,
    positive: Option<toml::Value>,
    threshold: Option<f64>,
    prediction: Option<String>,
    alert_below: Option<f64>,
    alert_above: Option<f64>,
}

impl LabelsFile {
    /// Checked, with the result columns it names among the job's `outputs`.
    pub(super) fn check(self, outputs: &[OutputSpec]) -> Result<LabelsSpec, String> {
        let from = match (self.table, self.query) {
            (Some(table), None) => SourceFrom::Table(
                TableName::parse(&table).map_err(|e| format!("labels.table: {e}"))?,
            ),
            (None, Some(query)) => SourceFrom::Query(
                check_query(&query).map_err(|e| e.replace("source.query", "labels.query"))?,
            ),
            (Some(_), Some(_)) => {
                return Err("[labels] takes `table` or `query`, not both".to_owned());
            }
            (None, None) => return Err("[labels] needs `table` or `query`".to_owned()),
        };
        let field =
            |what: &str, name: &str| Ident::parse(name).map_err(|e| format!("labels.{what}: {e}"));
        let result = |what: &str, name: &str| -> Result<Ident, String> {
            let column = field(what, name)?;
            if outputs.iter().any(|o| o.column == column) {
                return Ok(column);
            }
            let known: Vec<&str> = outputs.iter().map(|o| o.column.as_str()).collect();
            Err(format!(
                "labels.{what} = {name:?} is not a result column of this job (its [outputs]: {})",
                known.join(", ")
            ))
        };
        let maturity = parse_duration("labels.maturity", &self.maturity)?;
        if maturity < TimeDelta::zero() {
            return Err("labels.maturity must not be negative".to_owned());
        }
        let task = match (self.score, self.prediction) {
            (Some(score), None) => {
                let positive = match self.positive {
                    Some(toml::Value::String(text)) => Positive::Text(text),
                    Some(toml::Value::Integer(i)) => Positive::Integer(i),
                    Some(toml::Value::Boolean(b)) => Positive::Boolean(b),
                    Some(other) => {
                        return Err(format!(
                            "labels.positive = {other} must be a string, an integer or a boolean: the positive class's label"
                        ));
                    }
                    None => {
                        return Err("labels.positive is missing: the label of the positive class, like 1, true or \"churned\"".to_owned());
                    }
                };
                let threshold = self.threshold.unwrap_or(0.5);
                if !threshold.is_finite() {
                    return Err("labels.threshold must be a finite number".to_owned());
                }
                if self.predicted.is_some() && self.threshold.is_some() {
                    return Err(
                        "labels takes `predicted` or `threshold`, not both: the predicted label is read, or made from the score"
                            .to_owned(),
                    );
                }
                Task::Classification {
                    score: result("score", &score)?,
                    predicted: self
                        .predicted
                        .map(|p| result("predicted", &p))
                        .transpose()?,
                    positive,
                    threshold,
                }
            }
            (None, Some(prediction)) => {
                for (what, set) in [
                    ("positive", self.positive.is_some()),
                    ("predicted", self.predicted.is_some()),
                    ("threshold", self.threshold.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "labels.{what} is for classification (`score`), not regression (`prediction`)"
                        ));
                    }
                }
                Task::Regression {
                    prediction: result("prediction", &prediction)?,
                }
            }
            (Some(_), Some(_)) => {
                return Err("[labels] takes `score` (classification) or `prediction` (regression), not both".to_owned());
            }
            (None, None) => {
                return Err("[labels] needs `score` (classification: the positive class's probability column) or `prediction` (regression)".to_owned());
            }
        };
        for (what, bound) in [
            ("alert_below", self.alert_below),
            ("alert_above", self.alert_above),
        ] {
            if bound.is_some_and(|b| !b.is_finite()) {
                return Err(format!("labels.{what} must be a finite number"));
            }
        }
        Ok(LabelsSpec {
            from,
            key: field("key", &self.key)?,
            label: field("label", &self.label)?,
            timestamp: self.timestamp.map(|t| field("timestamp", &t)).transpose()?,
            maturity,
            task,
            alert_below: self.alert_below,
            alert_above: self.alert_above,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example job with `labels` as its `[labels]` section.
    fn parse(labels: &str) -> Result<LabelsSpec, String> {
        let text = format!(
            "schedule = \"*/30 * * * *\"\n[source]\ntable = \"t\"\nkey = \"id\"\ntimestamp = \"ts\"\nfeatures = [\"a\"]\n\
             [window]\nsize = \"30m\"\n[model]\npath = \"m.onnx\"\n[outputs]\np = \"probabilities[1]\"\nlabel = \"label\"\n\
             [sink]\ntable = \"r\"\n[labels]\ntable = \"truth\"\nkey = \"id\"\nlabel = \"y\"\nmaturity = \"1d\"\n{labels}"
        );
        crate::spec::parse_job("job", &text, std::path::Path::new("."))
            .map(|spec| spec.labels.expect("[labels] given"))
    }

    #[test]
    fn the_task_follows_the_columns_named() {
        let spec = parse("score = \"p\"\npositive = true").unwrap();
        assert_eq!(
            spec.task,
            Task::Classification {
                score: Ident::parse("p").unwrap(),
                predicted: None,
                positive: Positive::Boolean(true),
                threshold: 0.5,
            }
        );
        assert_eq!(spec.maturity, TimeDelta::days(1));
        let spec = parse("prediction = \"p\"\nalert_above = 3.5").unwrap();
        assert_eq!(spec.task.headline(), "mae");
        assert_eq!(spec.alert_above, Some(3.5));
    }

    #[test]
    fn label_mistakes_are_named() {
        for (labels, named) in [
            ("", "needs `score`"),
            ("score = \"p\"", "labels.positive is missing"),
            (
                "score = \"p\"\nprediction = \"p\"\npositive = 1",
                "not both",
            ),
            (
                "score = \"q\"\npositive = 1",
                "labels.score = \"q\" is not a result column",
            ),
            (
                "score = \"p\"\npositive = 1.5",
                "must be a string, an integer or a boolean",
            ),
            (
                "prediction = \"p\"\npositive = 1",
                "labels.positive is for classification",
            ),
            (
                "score = \"p\"\npositive = 1\npredicted = \"label\"\nthreshold = 0.3",
                "`predicted` or `threshold`",
            ),
            (
                "score = \"p\"\npositive = 1\ncolour = 2",
                "unknown field `colour`",
            ),
        ] {
            let err = parse(labels).unwrap_err();
            assert!(err.contains(named), "{labels:?}: {err}");
        }
    }

    #[test]
    fn positive_labels_compare_by_value() {
        let one = Positive::Integer(1);
        assert!(one.matches("1") && one.matches("1.0") && one.matches("true"));
        assert!(!one.matches("0") && !one.matches("2") && !one.matches("yes"));
        let yes = Positive::Boolean(true);
        assert!(yes.matches("t") && yes.matches("1") && !yes.matches("false"));
        let churned = Positive::Text("churned".into());
        assert!(churned.matches("churned") && !churned.matches("Churned"));
    }

    /// An integer label is judged as its text would be, as PostgreSQL and MySQL print it.
    #[test]
    fn integer_labels_match_as_their_text() {
        let positives = [
            Positive::Integer(0),
            Positive::Integer(1),
            Positive::Integer(-2),
            Positive::Boolean(true),
            Positive::Boolean(false),
            Positive::Text("1".into()),
            Positive::Text("01".into()),
            Positive::Text("yes".into()),
            Positive::Integer(1 << 53),
        ];
        for positive in &positives {
            for label in (-3..=3).chain([1 << 53, (1 << 53) + 1]) {
                assert_eq!(
                    positive.matches_integer(label),
                    positive.matches(&label.to_string()),
                    "{positive:?} against {label}"
                );
            }
        }
    }
}
