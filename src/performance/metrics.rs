//! The realized metrics of one window, from its labelled rows: exact, as scikit-learn computes
//! them (its conventions are kept where they choose: ties in the ROC curve, probabilities
//! clipped for log loss, 0 for a precision with no predicted positive, R² of a constant label).
//! Pure arithmetic, no database: [`super`] gathers the rows.

/// One classifier row: the positive class's score, whether the label is positive, and whether
/// the positive class was predicted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classified {
    pub score: f64,
    pub positive: bool,
    pub predicted: bool,
}

/// One regressor row: the prediction and the label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regressed {
    pub prediction: f64,
    pub label: f64,
}

/// One metric of a window: its name, its value (`None`: undefined for these rows, such as an
/// AUC with one class only), and what one number cannot hold (the calibration table, as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figure {
    pub metric: &'static str,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Figure {
    fn new(metric: &'static str, value: Option<f64>) -> Figure {
        Figure {
            metric,
            value: value.filter(|v| v.is_finite()),
            detail: None,
        }
    }
}

/// Every metric's name, classification first, in the order they are shown.
pub const CLASSIFICATION: [&str; 13] = [
    "labelled",
    "coverage",
    "positive_rate",
    "auc",
    "log_loss",
    "brier",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "calibration_error",
    "duplicate_labels",
    "scored",
];
pub const REGRESSION: [&str; 8] = [
    "labelled",
    "coverage",
    "mae",
    "rmse",
    "bias",
    "r2",
    "duplicate_labels",
    "scored",
];

/// The figures every window has: rows labelled and scored, coverage, duplicate labels seen.
fn counts(labelled: usize, scored: u64, duplicates: u64) -> Vec<Figure> {
    vec![
        Figure::new("labelled", Some(labelled as f64)),
        Figure::new(
            "coverage",
            (scored > 0).then(|| labelled as f64 / scored as f64),
        ),
        Figure::new("duplicate_labels", Some(duplicates as f64)),
        Figure::new("scored", Some(scored as f64)),
    ]
}

/// A classifier's window.
pub fn classification(rows: &[Classified], scored: u64, duplicates: u64) -> Vec<Figure> {
    let mut figures = counts(rows.len(), scored, duplicates);
    let n = rows.len() as f64;
    if rows.is_empty() {
        return figures;
    }
    let positives = rows.iter().filter(|r| r.positive).count() as f64;
    figures.push(Figure::new("positive_rate", Some(positives / n)));
    figures.push(Figure::new("auc", roc_auc(rows)));

    let probabilities = rows.iter().all(|r| (0.0..=1.0).contains(&r.score));
    let truth = |r: &Classified| f64::from(u8::from(r.positive));
    // scikit-learn clips to the float64 epsilon, so a confident miss costs ~36, not infinity.
    let eps = f64::EPSILON;
    let log_loss = probabilities.then(|| {
        -exact_sum(rows.iter().map(|r| {
            let p = r.score.clamp(eps, 1.0 - eps);
            if r.positive { p.ln() } else { (1.0 - p).ln() }
        })) / n
    });
    figures.push(Figure::new("log_loss", log_loss));
    let brier =
        probabilities.then(|| exact_sum(rows.iter().map(|r| (r.score - truth(r)).powi(2))) / n);
    figures.push(Figure::new("brier", brier));

    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    let mut correct = 0.0;
    for r in rows.iter() {
        match (r.predicted, r.positive) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => {}
        }
        if r.predicted == r.positive {
            correct += 1.0;
        }
    }
    // scikit-learn's zero_division default: an undefined ratio is 0.
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    figures.push(Figure::new("accuracy", Some(correct / n)));
    figures.push(Figure::new("precision", Some(ratio(tp, tp + fp))));
    figures.push(Figure::new("recall", Some(ratio(tp, tp + fn_))));
    figures.push(Figure::new(
        "f1",
        Some(ratio(2.0 * tp, 2.0 * tp + fp + fn_)),
    ));

    let mut calibration = Figure::new("calibration_error", None);
    if probabilities {
        let (error, bins) = calibration_table(rows);
        calibration.value = Some(error);
        calibration.detail = Some(bins);
    }
    figures.push(calibration);
    figures
}

/// ROC AUC by the trapezoidal rule over the distinct scores, as scikit-learn's
/// `roc_auc_score`: tied scores form one point of the curve. `None` with one class only.
///
/// Each class's scores are sorted as plain integers (their [`order_key`]) and the two walked
/// from the highest down, as one sorted list would be: sorting the rows themselves by a float
/// comparison was a third of an evaluation's CPU.
fn roc_auc(rows: &[Classified]) -> Option<f64> {
    let (mut positive, mut negative): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for r in rows {
        match r.positive {
            true => positive.push(order_key(r.score)),
            false => negative.push(order_key(r.score)),
        }
    }
    if positive.is_empty() || negative.is_empty() {
        return None;
    }
    positive.sort_unstable();
    negative.sort_unstable();
    let (positives, negatives) = (positive.len() as f64, negative.len() as f64);
    // The next highest score of either class, and whether it is a positive's.
    let next = |p: &[u64], n: &[u64]| match (p.last(), n.last()) {
        (Some(a), Some(b)) if a >= b => Some((score_of(*a), true)),
        (_, Some(b)) => Some((score_of(*b), false)),
        (Some(a), None) => Some((score_of(*a), true)),
        (None, None) => None,
    };
    let (mut p, mut n) = (&positive[..], &negative[..]);
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut area = 0.0;
    while let Some((score, _)) = next(p, n) {
        let (tp0, fp0) = (tp, fp);
        // One point of the curve: every row whose score equals this one (`==`, as a float:
        // 0.0 and -0.0 together), the first always, so a NaN is a point of its own.
        let mut first = true;
        while let Some((s, is_positive)) = next(p, n) {
            if !(first || s == score) {
                break;
            }
            first = false;
            match is_positive {
                true => {
                    tp += 1.0;
                    p = &p[..p.len() - 1];
                }
                false => {
                    fp += 1.0;
                    n = &n[..n.len() - 1];
                }
            }
        }
        area += (fp - fp0) * (tp + tp0) / 2.0;
    }
    Some(area / (positives * negatives))
}

/// A float as an integer in the same order as `f64::total_cmp` (sign bit flipped for positive
/// numbers, every bit for negative ones).
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    match bits >> 63 {
        1 => !bits,
        _ => bits | 1 << 63,
    }
}

/// The float of an [`order_key`].
fn score_of(key: u64) -> f64 {
    f64::from_bits(match key >> 63 {
        1 => key & !(1 << 63),
        _ => !key,
    })
}

/// Ten equal-width bins of the score, as scikit-learn's `calibration_curve(n_bins=10)` makes
/// them: each non-empty bin's rows, mean score and fraction positive; and the expected
/// calibration error, their gaps weighted by rows.
fn calibration_table(rows: &[Classified]) -> (f64, serde_json::Value) {
    const BINS: usize = 10;
    // scikit-learn's edges: linspace(0, 1, 11), a score on an inner edge in the lower bin.
    let step = 1.0 / BINS as f64;
    let mut count = [0u64; BINS];
    let mut score: [ExactSum; BINS] = Default::default();
    let mut positive = [0u64; BINS];
    for r in rows {
        let bin = (1..BINS)
            .take_while(|&i| (i as f64 * step) < r.score)
            .count();
        count[bin] += 1;
        score[bin].add(r.score);
        positive[bin] += u64::from(r.positive);
    }
    let n = rows.len() as f64;
    let mut error = 0.0;
    let mut bins = Vec::new();
    for bin in 0..BINS {
        if count[bin] == 0 {
            continue;
        }
        let rows = count[bin] as f64;
        let (mean_score, fraction) = (score[bin].value() / rows, positive[bin] as f64 / rows);
        error += rows / n * (fraction - mean_score).abs();
        bins.push(serde_json::json!({
            "bin": bin,
            "from": bin as f64 / BINS as f64,
            "to": (bin + 1) as f64 / BINS as f64,
            "rows": count[bin],
            "mean_score": mean_score,
            "fraction_positive": fraction,
        }));
    }
    (error, serde_json::Value::Array(bins))
}

/// The sum of `values`, correctly rounded (see [`ExactSum`]).
pub(crate) fn exact_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = ExactSum::default();
    values.into_iter().for_each(|v| sum.add(v));
    sum.value()
}

/// A sum kept exactly (Shewchuk's algorithm, as Python's `math.fsum`) and rounded once at the
/// end, so it is the same whatever order the rows came in: the join's order changes with the
/// plan, and a sum that moved in its last bit would store a window's figures again as changed.
/// A non-finite value, or a sum past the float range, gives the plain sum.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
    plain: f64,
    /// A value was not finite, or the exact sum overflowed: only the plain sum is kept (as
    /// `math.fsum` drops its partials then; kept, they would grow by one a value).
    plain_only: bool,
}

impl ExactSum {
    pub fn add(&mut self, value: f64) {
        self.plain += value;
        if self.plain_only {
            return;
        }
        if !value.is_finite() {
            return self.keep_plain_only();
        }
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let high = x + y;
            let low = y - (high - x);
            if low != 0.0 {
                self.partials[kept] = low;
                kept += 1;
            }
            x = high;
        }
        self.partials.truncate(kept);
        if !x.is_finite() {
            return self.keep_plain_only();
        }
        self.partials.push(x);
    }

    fn keep_plain_only(&mut self) {
        self.plain_only = true;
        self.partials = Vec::new();
    }

    pub fn value(&self) -> f64 {
        if self.plain_only {
            return self.plain;
        }
        // Add the partials from the largest, then round half-even as `math.fsum` does.
        let mut partials = self.partials.clone();
        let Some(mut high) = partials.pop() else {
            return 0.0;
        };
        let mut low = 0.0;
        while let Some(y) = partials.pop() {
            let x = high;
            high = x + y;
            low = y - (high - x);
            if low != 0.0 {
                break;
            }
        }
        if let Some(&next) = partials.last()
            && ((low < 0.0 && next < 0.0) || (low > 0.0 && next > 0.0))
        {
            let y = low * 2.0;
            let x = high + y;
            if y == x - high {
                high = x;
            }
        }
        high
    }
}

/// A regressor's window.
pub fn regression(rows: &[Regressed], scored: u64, duplicates: u64) -> Vec<Figure> {
    let mut figures = counts(rows.len(), scored, duplicates);
    if rows.is_empty() {
        return figures;
    }
    let n = rows.len() as f64;
    let mean = |f: &dyn Fn(&Regressed) -> f64| exact_sum(rows.iter().map(f)) / n;
    figures.push(Figure::new(
        "mae",
        Some(mean(&|r| (r.prediction - r.label).abs())),
    ));
    let mse = mean(&|r| (r.prediction - r.label).powi(2));
    figures.push(Figure::new("rmse", Some(mse.sqrt())));
    figures.push(Figure::new("bias", Some(mean(&|r| r.prediction - r.label))));
    // scikit-learn: undefined for one row; a constant label scores 1 if predicted exactly, else 0.
    let r2 = (rows.len() >= 2).then(|| {
        let label_mean = mean(&|r| r.label);
        let total = exact_sum(rows.iter().map(|r| (r.label - label_mean).powi(2)));
        let residual = mse * n;
        match total == 0.0 {
            true if residual == 0.0 => 1.0,
            true => 0.0,
            false => 1.0 - residual / total,
        }
    });
    figures.push(Figure::new("r2", r2));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(figures: &[Figure], metric: &str) -> Option<f64> {
        figures.iter().find(|f| f.metric == metric).unwrap().value
    }

    fn row(score: f64, positive: bool) -> Classified {
        Classified {
            score,
            positive,
            predicted: score >= 0.5,
        }
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Positives 0.8 and 0.4, negatives 0.4 and 0.1: 3 of 4 pairs ordered, one tied.
        let rows = [
            row(0.8, true),
            row(0.4, true),
            row(0.4, false),
            row(0.1, false),
        ];
        let figures = classification(&rows, 6, 0);
        assert_eq!(value(&figures, "auc"), Some(0.875));
        assert_eq!(value(&figures, "coverage"), Some(4.0 / 6.0));
        assert_eq!(value(&figures, "precision"), Some(1.0));
        assert_eq!(value(&figures, "recall"), Some(0.5));
    }

    #[test]
    fn one_class_has_no_auc_and_no_predicted_positive_is_zero_precision() {
        let rows = [row(0.2, false), row(0.3, false)];
        let figures = classification(&rows, 2, 0);
        assert_eq!(value(&figures, "auc"), None);
        assert_eq!(value(&figures, "precision"), Some(0.0));
        assert_eq!(value(&figures, "f1"), Some(0.0));
    }

    #[test]
    fn scores_outside_zero_one_have_no_probability_metrics() {
        let rows = [row(2.5, true), row(-1.0, false)];
        let figures = classification(&rows, 2, 0);
        assert_eq!(value(&figures, "auc"), Some(1.0));
        assert_eq!(value(&figures, "log_loss"), None);
        assert_eq!(value(&figures, "brier"), None);
    }

    #[test]
    fn regression_of_a_constant_label() {
        let rows = [
            Regressed {
                prediction: 1.0,
                label: 2.0,
            },
            Regressed {
                prediction: 3.0,
                label: 2.0,
            },
        ];
        let figures = regression(&rows, 2, 0);
        assert_eq!(value(&figures, "mae"), Some(1.0));
        assert_eq!(value(&figures, "bias"), Some(0.0));
        assert_eq!(value(&figures, "r2"), Some(0.0));
    }

    /// The AUC by its definition: over every (positive, negative) pair, 1 when the positive
    /// scores higher, a half when they tie.
    fn pairwise_auc(rows: &[Classified]) -> Option<f64> {
        let (mut pairs, mut wins) = (0.0, 0.0);
        for p in rows.iter().filter(|r| r.positive) {
            for n in rows.iter().filter(|r| !r.positive) {
                pairs += 1.0;
                wins += match p.score.partial_cmp(&n.score) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                };
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    #[test]
    fn order_keys_sort_as_total_cmp_and_come_back() {
        let mut xs = [
            -f64::INFINITY,
            -1e300,
            -2.5,
            -0.0,
            0.0,
            1e-310,
            0.25,
            1.0,
            7e200,
            f64::INFINITY,
        ];
        xs.reverse();
        let mut keys: Vec<u64> = xs.iter().map(|x| order_key(*x)).collect();
        keys.sort_unstable();
        let back: Vec<f64> = keys.iter().map(|k| score_of(*k)).collect();
        xs.sort_by(f64::total_cmp);
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn auc_with_a_nan_score_ends() {
        let rows = [row(f64::NAN, true), row(0.3, false), row(0.7, true)];
        assert!(roc_auc(&rows).is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Scores drawn from few values (many ties, 0.0 and -0.0 among them) and from many.
        #[test]
        fn auc_equals_the_pairwise_definition(
            rows in proptest::collection::vec(
                (proptest::prop_oneof![
                    proptest::sample::select(vec![-0.0, 0.0, 0.25, 0.5, 1.0]),
                    -1e3f64..1e3,
                ], proptest::bool::ANY),
                0..60,
            )
        ) {
            let rows: Vec<Classified> = rows.into_iter().map(|(s, p)| row(s, p)).collect();
            match (roc_auc(&rows), pairwise_auc(&rows)) {
                (Some(a), Some(b)) => proptest::prop_assert!((a - b).abs() < 1e-12, "{a} vs {b}"),
                (a, b) => proptest::prop_assert_eq!(a, b),
            }
        }
    }

    /// After a value that is not finite, or an overflow, no partials are kept: a window of a
    /// million rows after one infinite error once took a million partials per row.
    #[test]
    fn exact_sums_keep_no_partials_after_infinities() {
        for first in [f64::NAN, f64::INFINITY, 1e308] {
            let mut sum = ExactSum::default();
            sum.add(first);
            sum.add(1e308);
            for i in 0..1000 {
                sum.add(f64::from(i));
            }
            assert!(sum.partials.is_empty(), "after {first}");
            assert_eq!(sum.value().to_bits(), sum.plain.to_bits());
        }
    }

    #[test]
    fn exact_sums_are_correctly_rounded() {
        assert_eq!(exact_sum([1e16, 1.0, -1e16]), 1.0);
        assert_eq!(exact_sum([0.1; 10]), 1.0);
        assert_eq!(exact_sum([]), 0.0);
        assert_eq!(exact_sum([1.0, f64::INFINITY]), f64::INFINITY);
        assert!(exact_sum([f64::NAN, 1.0]).is_nan());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// The same values in another order sum to the same float.
        #[test]
        fn exact_sums_do_not_depend_on_order(
            values in proptest::collection::vec(
                proptest::prop_oneof![-1e3f64..1e3, -1e-12f64..1e-12, -1e15f64..1e15],
                0..80,
            ),
            seed in proptest::num::u64::ANY,
        ) {
            let mut shuffled = values.clone();
            // A deterministic shuffle by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let (a, b) = (exact_sum(values.iter().copied()), exact_sum(shuffled));
            proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
