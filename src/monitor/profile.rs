//! A window's profile: per feature and per output, rows, nulls, bad values, and a summary of the
//! values that can be merged across chunks, shards and windows (count, mean, variance, extremes
//! and a KLL quantile sketch for numbers; a frequent-items sketch for categories).
//!
//! A [`Profile`] is fed each chunk as it is scored (its features on a thread beside the model,
//! its outputs after), so its memory is the sketches' (a few kilobytes per column) whatever the
//! window's size.

use anyhow::Context;
use datasketches::common::SearchCriteria;
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::kll::{KllFloat, KllSketch};
use polars::prelude::{Column, DataType};
use serde_json::json;

use crate::source::SourceChunk;

/// KLL's accuracy parameter: about 1.3% normalized rank error, a few kilobytes per column, and
/// exact up to 200 values.
pub const KLL_K: u16 = 200;
/// The frequent-items sketch's map: exact up to 192 distinct values per column, then each count
/// within 1.4% of the rows.
pub const FREQUENT_MAP_SIZE: usize = 256;
/// Categories kept in a profile's readable summary (the sketch keeps more).
pub const TOP_CATEGORIES: usize = 20;
/// The quantiles a profile's readable summary lists.
const SUMMARY_RANKS: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99];

/// How a challenger's outputs are named in profiles: result columns cannot hold a `:`.
pub const CHALLENGER_PREFIX: &str = "challenger:";

/// Whether a column is a feature (as read) or an output (as scored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Feature,
    Output,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Feature => "feature",
            Role::Output => "output",
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Role> {
        match text {
            "feature" => Ok(Role::Feature),
            "output" => Ok(Role::Output),
            other => anyhow::bail!("unknown profile role `{other}`"),
        }
    }
}

/// One column's profile.
#[derive(Debug, Clone)]
pub struct ColumnProfile {
    pub column: String,
    pub role: Role,
    /// Rows seen: every row read for a feature, every row scored for an output.
    pub rows: u64,
    /// NULL cells.
    pub nulls: u64,
    /// Cells that are not NULL but cannot be used: NaN, infinite, or (features) a value that did
    /// not fit the model's input type.
    pub bad: u64,
    pub values: Values,
}

/// The usable values of a column.
#[derive(Debug, Clone)]
pub enum Values {
    Numeric(Numeric),
    Category(Box<FrequentItemsSketch<String>>),
}

/// The finite values of a numeric column: exact moments and extremes, approximate quantiles.
#[derive(Debug, Clone)]
pub struct Numeric {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (Chan et al.'s `M2`): merges exactly.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub sketch: KllSketch<KllFloat<f64>>,
}

impl Default for Numeric {
    fn default() -> Self {
        Numeric {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: KllSketch::new(KLL_K).expect("KLL_K is in range"),
        }
    }
}

impl Numeric {
    /// Population standard deviation, as numpy's `std()` (ddof 0).
    pub fn std(&self) -> f64 {
        match self.count {
            0 => f64::NAN,
            n => (self.m2 / n as f64).sqrt(),
        }
    }

    /// Add a batch of finite values: their moments are combined with Chan et al.'s formula,
    /// which two passes over the batch make as exact as numpy's.
    fn add_batch(&mut self, values: &[f64]) {
        if values.is_empty() {
            return;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let m2: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        let (mut min, mut max) = (self.min, self.max);
        // A chunk's own sketch, merged in: a third cheaper than updating the window's sketch
        // value by value (its compactions then work on small levels).
        let mut sketch = KllSketch::new(KLL_K).expect("KLL_K is in range");
        for &v in values {
            min = min.min(v);
            max = max.max(v);
            sketch.update(KllFloat::<f64>::new(v).expect("finite values only"));
        }
        (self.min, self.max) = (min, max);
        self.sketch
            .merge(&sketch)
            .expect("sketches of the same k and type merge");
        self.combine(values.len() as u64, mean, m2);
    }

    fn combine(&mut self, count: u64, mean: f64, m2: f64) {
        if count == 0 {
            return;
        }
        let (na, nb) = (self.count as f64, count as f64);
        let total = na + nb;
        let delta = mean - self.mean;
        self.mean += delta * nb / total;
        self.m2 += m2 + delta * delta * na * nb / total;
        self.count += count;
    }

    fn merge(&mut self, other: &Numeric) -> anyhow::Result<()> {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.combine(other.count, other.mean, other.m2);
        self.sketch
            .merge(&other.sketch)
            .map_err(|e| anyhow::anyhow!("merging quantile sketches: {e}"))
    }

    /// The value at normalized `rank` (inclusive: the smallest value with at least that
    /// fraction of values at or below it).
    pub fn quantile(&self, rank: f64) -> Option<f64> {
        self.sketch
            .quantile(rank, SearchCriteria::Inclusive)
            .ok()
            .flatten()
            .map(KllFloat::into_inner)
    }
}

impl ColumnProfile {
    fn new(column: String, role: Role, numeric: bool) -> Self {
        let values = match numeric {
            true => Values::Numeric(Numeric::default()),
            false => Values::Category(Box::new(
                FrequentItemsSketch::new(FREQUENT_MAP_SIZE).expect("a power of two"),
            )),
        };
        ColumnProfile {
            column,
            role,
            rows: 0,
            nulls: 0,
            bad: 0,
            values,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.values {
            Values::Numeric(_) => "numeric",
            Values::Category(_) => "category",
        }
    }

    /// NULLs and bad values over rows.
    pub fn null_rate(&self) -> f64 {
        match self.rows {
            0 => 0.0,
            rows => (self.nulls + self.bad) as f64 / rows as f64,
        }
    }

    /// Usable values.
    pub fn valid(&self) -> u64 {
        self.rows - self.nulls - self.bad
    }

    /// Fold `other` (the same column, from another chunk, shard or window) into this one.
    pub fn merge(&mut self, other: &ColumnProfile) -> anyhow::Result<()> {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.bad += other.bad;
        match (&mut self.values, &other.values) {
            (Values::Numeric(a), Values::Numeric(b)) => a.merge(b),
            (Values::Category(a), Values::Category(b)) => {
                a.merge(b);
                Ok(())
            }
            _ => anyhow::bail!(
                "column `{}` is numeric in one profile and a category in another",
                self.column
            ),
        }
    }

    /// Add one chunk's column. `problem(row)` says whether a null cell held a value that did not
    /// fit (a bad value) rather than NULL.
    fn add(&mut self, column: &Column, problem: impl Fn(usize) -> bool) -> anyhow::Result<()> {
        self.rows += column.len() as u64;
        let has_nulls = column.null_count() > 0;
        let nulls = |profile: &mut ColumnProfile, valid: &dyn Fn(usize) -> bool| {
            if !has_nulls {
                return;
            }
            for row in (0..column.len()).filter(|&row| !valid(row)) {
                match problem(row) {
                    true => profile.bad += 1,
                    false => profile.nulls += 1,
                }
            }
        };
        match column.dtype() {
            DataType::Float64 | DataType::Int64 => {
                let cast = column.cast(&DataType::Float64)?;
                let floats = cast.f64()?;
                let mut finite = Vec::with_capacity(floats.len());
                if has_nulls {
                    finite.extend(floats.iter().flatten());
                } else {
                    // No validity to look at: the values' slices as they are.
                    for values in floats.downcast_iter() {
                        finite.extend_from_slice(values.values());
                    }
                }
                let before = finite.len();
                finite.retain(|v| v.is_finite());
                self.bad += (before - finite.len()) as u64;
                nulls(self, &|row| floats.get(row).is_some());
                let Values::Numeric(numeric) = &mut self.values else {
                    anyhow::bail!("column `{}` is not numeric", self.column);
                };
                numeric.add_batch(&finite);
            }
            DataType::String => {
                let strings = column.str()?;
                nulls(self, &|row| strings.get(row).is_some());
                let Values::Category(sketch) = &mut self.values else {
                    anyhow::bail!("column `{}` is not a category", self.column);
                };
                for value in strings.iter().flatten() {
                    sketch.update_ref(value);
                }
            }
            DataType::Boolean => {
                let flags = column.bool()?;
                nulls(self, &|row| flags.get(row).is_some());
                let Values::Category(sketch) = &mut self.values else {
                    anyhow::bail!("column `{}` is not a category", self.column);
                };
                let trues = flags.sum().unwrap_or(0) as u64;
                let falses = (flags.len() - flags.null_count()) as u64 - trues;
                sketch.update_with_count("true".to_owned(), trues);
                sketch.update_with_count("false".to_owned(), falses);
            }
            other => anyhow::bail!("column `{}` has unexpected type {other}", self.column),
        }
        Ok(())
    }

    /// A readable summary for people querying the profiles table: quantiles, or the top
    /// categories with counts and the count of the rest.
    pub fn summary(&self) -> serde_json::Value {
        match &self.values {
            Values::Numeric(numeric) => json!({
                "quantiles": SUMMARY_RANKS
                    .iter()
                    .filter_map(|&rank| numeric.quantile(rank).map(|v| json!([rank, v])))
                    .collect::<Vec<_>>(),
            }),
            Values::Category(sketch) => {
                let top = top_categories(sketch, TOP_CATEGORIES);
                let counted: u64 = top.iter().map(|(_, n)| n).sum();
                json!({
                    "top": top.iter().map(|(value, n)| json!([value, n])).collect::<Vec<_>>(),
                    "other": sketch.total_weight().saturating_sub(counted),
                })
            }
        }
    }

    /// The sketch's bytes, in Apache DataSketches' serialization (readable by its Java, C++ and
    /// Python libraries).
    pub fn sketch_bytes(&self) -> Vec<u8> {
        match &self.values {
            Values::Numeric(numeric) => numeric.sketch.serialize(),
            Values::Category(sketch) => sketch.serialize(),
        }
    }

    /// A column's profile as stored: its counts, its moments and its sketch.
    pub fn from_stored(stored: StoredProfile) -> anyhow::Result<ColumnProfile> {
        let StoredProfile {
            column,
            role,
            kind,
            rows,
            nulls,
            bad,
            mean,
            m2,
            min,
            max,
            sketch,
        } = stored;
        let context = || format!("reading the stored profile of column `{column}`");
        let values = match kind.as_str() {
            "numeric" => {
                let sketch = KllSketch::<KllFloat<f64>>::deserialize(&sketch)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(context)?;
                Values::Numeric(Numeric {
                    count: sketch.n(),
                    mean: mean.unwrap_or(0.0),
                    m2: m2.unwrap_or(0.0),
                    min: min.unwrap_or(f64::INFINITY),
                    max: max.unwrap_or(f64::NEG_INFINITY),
                    sketch,
                })
            }
            "category" => Values::Category(Box::new(
                FrequentItemsSketch::<String>::deserialize(&sketch)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(context)?,
            )),
            other => anyhow::bail!("column `{column}` has an unknown profile kind `{other}`"),
        };
        Ok(ColumnProfile {
            role: Role::parse(&role)?,
            column,
            rows: rows as u64,
            nulls: nulls as u64,
            bad: bad as u64,
            values,
        })
    }
}

/// A profile row as the database holds it.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    pub column: String,
    pub role: String,
    pub kind: String,
    pub rows: i64,
    pub nulls: i64,
    pub bad: i64,
    pub mean: Option<f64>,
    pub m2: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sketch: Vec<u8>,
}

/// The `n` most frequent categories with their (estimated) counts, most frequent first, ties by
/// value.
pub fn top_categories(sketch: &FrequentItemsSketch<String>, n: usize) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = sketch
        .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
        .into_iter()
        .map(|row| (row.item().clone(), row.estimate()))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    rows
}

/// A window's profile: one [`ColumnProfile`] per feature, then per output.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    /// An empty profile of these features (in the order of the chunks' columns), then these
    /// outputs (in the order of the model's output columns), each with whether it is numeric.
    pub fn new(
        features: impl IntoIterator<Item = (String, bool)>,
        outputs: impl IntoIterator<Item = (String, bool)>,
    ) -> Profile {
        let features = features
            .into_iter()
            .map(|(name, numeric)| ColumnProfile::new(name, Role::Feature, numeric));
        let outputs = outputs
            .into_iter()
            .map(|(name, numeric)| ColumnProfile::new(name, Role::Output, numeric));
        Profile {
            columns: features.chain(outputs).collect(),
        }
    }

    /// Add a chunk's features, as read.
    pub fn add_features(&mut self, chunk: &SourceChunk) -> anyhow::Result<()> {
        let features = &chunk.frame.columns()[1..];
        for (index, (profile, column)) in self.columns.iter_mut().zip(features).enumerate() {
            profile.add(column, |row| chunk.problem(row, index).is_some())?;
        }
        Ok(())
    }

    /// Add the model's outputs for a chunk's rows scored (the columns after the `features`).
    pub fn add_outputs(&mut self, features: usize, outputs: &[Column]) -> anyhow::Result<()> {
        for (profile, column) in self.columns[features..].iter_mut().zip(outputs) {
            profile.add(column, |_| false)?;
        }
        Ok(())
    }

    /// Add the challenger's output columns, empty, after the model's: each profiled as an output
    /// named `challenger:<column>`.
    pub fn with_challenger(mut self, outputs: impl IntoIterator<Item = (String, bool)>) -> Profile {
        self.columns
            .extend(outputs.into_iter().map(|(name, numeric)| {
                ColumnProfile::new(format!("{CHALLENGER_PREFIX}{name}"), Role::Output, numeric)
            }));
        self
    }

    /// Add a chunk's challenger outputs (in the order of its output columns).
    pub fn add_challenger(&mut self, outputs: &[Column]) {
        let columns = self
            .columns
            .iter_mut()
            .filter(|c| c.column.starts_with(CHALLENGER_PREFIX));
        for (profile, column) in columns.zip(outputs) {
            // A column the challenger fills with another type than the profile expects is left
            // unprofiled: the challenger's outputs bind as the model's, so it is not expected.
            let _ = profile.add(column, |_| false);
        }
    }

    /// Fold another profile of the same columns into this one; columns only `other` has are
    /// added.
    pub fn merge(&mut self, other: Profile) -> anyhow::Result<()> {
        for column in other.columns {
            match self
                .columns
                .iter_mut()
                .find(|c| c.column == column.column && c.role == column.role)
            {
                Some(mine) => mine.merge(&column)?,
                None => self.columns.push(column),
            }
        }
        Ok(())
    }

    /// A column by role and name: a feature and an output may share a name.
    pub fn column(&self, role: Role, name: &str) -> Option<&ColumnProfile> {
        self.columns
            .iter()
            .find(|c| c.column == name && c.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(values: &[Option<f64>]) -> ColumnProfile {
        let mut profile = ColumnProfile::new("x".into(), Role::Feature, true);
        let column = Column::new("x".into(), values);
        profile.add(&column, |_| false).unwrap();
        profile
    }

    #[test]
    fn numeric_profile_counts_nulls_and_bad_values_apart() {
        let profile = numeric(&[
            Some(1.0),
            None,
            Some(f64::NAN),
            Some(3.0),
            Some(f64::INFINITY),
        ]);
        assert_eq!((profile.rows, profile.nulls, profile.bad), (5, 1, 2));
        let Values::Numeric(n) = &profile.values else {
            panic!()
        };
        assert_eq!(
            (n.count, n.mean, n.std(), n.min, n.max),
            (2, 2.0, 1.0, 1.0, 3.0)
        );
    }

    #[test]
    fn merged_moments_equal_the_whole() {
        let all: Vec<Option<f64>> = (0..1000)
            .map(|i| Some((i as f64).sin() * 50.0 + 7.0))
            .collect();
        let whole = numeric(&all);
        let mut parts = numeric(&all[..333]);
        parts.merge(&numeric(&all[333..])).unwrap();
        let (Values::Numeric(a), Values::Numeric(b)) = (&whole.values, &parts.values) else {
            panic!()
        };
        assert!((a.mean - b.mean).abs() < 1e-12);
        assert!((a.std() - b.std()).abs() < 1e-12);
        assert_eq!((a.count, a.min, a.max), (b.count, b.min, b.max));
    }

    #[test]
    fn stored_sketches_read_back() {
        let profile = numeric(&[Some(1.0), Some(2.0), Some(5.0)]);
        let Values::Numeric(n) = &profile.values else {
            panic!()
        };
        let back = ColumnProfile::from_stored(StoredProfile {
            column: "x".into(),
            role: "feature".into(),
            kind: "numeric".into(),
            rows: 3,
            nulls: 0,
            bad: 0,
            mean: Some(n.mean),
            m2: Some(n.m2),
            min: Some(n.min),
            max: Some(n.max),
            sketch: profile.sketch_bytes(),
        })
        .unwrap();
        let Values::Numeric(m) = &back.values else {
            panic!()
        };
        assert_eq!(m.quantile(0.5), Some(2.0));
        assert_eq!(m.count, 3);
    }
}
