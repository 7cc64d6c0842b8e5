//! Entity-level evaluation: exact-match precision, recall and F1 over labelled spans.
//!
//! The numbers are those of seqeval's default (non-strict) mode, which for BIO tags are
//! conlleval's: an entity counts as correct only when its type, first and last token all match a
//! gold entity of the same sentence. Counts are kept per entity type; [`Scorer::micro`] sums them
//! over types, [`episode_summary`] over few-shot episodes.
//!
//! Zero divisions give 0, as seqeval's default `zero_division` does: precision with nothing
//! predicted, recall with nothing in the gold, and F1 when precision + recall is 0.
//!
//! Tags are cut into entities by the runtime's chunker ([`spans`] with a [`Scheme`], re-exported
//! from `ner_edge::adapt::bio`), the one `ner-edge adapt` reads support mentions with, so
//! evaluation and adaptation agree on what an entity is.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ner_edge::{Error, Result};

pub use ner_edge::adapt::bio::{spans, Scheme, Span};

fn in_context(err: Error, what: &str) -> Error {
    match err {
        Error::Input(m) => Error::Input(format!("{what}: {m}")),
        other => other,
    }
}

/// Precision, recall and F1 (fractions in `[0, 1]`) with the counts they come from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prf {
    /// `tp / predicted`, 0 when nothing was predicted.
    pub precision: f64,
    /// `tp / gold`, 0 when the gold has no entity.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub f1: f64,
    /// Predicted entities that exactly match a gold entity.
    pub tp: usize,
    /// Predicted entities.
    pub predicted: usize,
    /// Gold entities.
    pub gold: usize,
}

impl Prf {
    /// Scores from counts, with 0 for every zero division (seqeval's default).
    pub fn from_counts(tp: usize, predicted: usize, gold: usize) -> Prf {
        let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, gold);
        let sum = precision + recall;
        let f1 = if sum == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / sum
        };
        Prf {
            precision,
            recall,
            f1,
            tp,
            predicted,
            gold,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    tp: usize,
    predicted: usize,
    gold: usize,
}

/// Accumulates entity counts per type over sentences (or whole episodes, via [`Scorer::merge`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scorer {
    counts: BTreeMap<String, Counts>,
}

impl Scorer {
    /// An empty scorer.
    pub fn new() -> Scorer {
        Scorer::default()
    }

    /// Adds one sentence given as gold and predicted tags in `scheme`.
    ///
    /// Both sequences must have the same length and contain only tags valid for `scheme`;
    /// otherwise this returns [`Error::Input`] and the scorer is left unchanged.
    pub fn add<G: AsRef<str>, P: AsRef<str>>(
        &mut self,
        gold: &[G],
        pred: &[P],
        scheme: Scheme,
    ) -> Result<()> {
        if gold.len() != pred.len() {
            return Err(Error::Input(format!(
                "gold has {} tags but prediction has {}",
                gold.len(),
                pred.len()
            )));
        }
        let gold = spans(gold, scheme).map_err(|e| in_context(e, "gold"))?;
        let pred = spans(pred, scheme).map_err(|e| in_context(e, "prediction"))?;
        self.add_spans(&gold, &pred);
        Ok(())
    }

    /// Adds one sentence given as gold and predicted entities. A predicted span is correct when
    /// an identical gold span (same start, end and type) exists; repeated spans count once, as
    /// in seqeval, which compares sets.
    pub fn add_spans(&mut self, gold: &[Span], pred: &[Span]) {
        let mut gold: Vec<&Span> = gold.iter().collect();
        gold.sort_unstable();
        gold.dedup();
        let mut pred: Vec<&Span> = pred.iter().collect();
        pred.sort_unstable();
        pred.dedup();
        for span in &gold {
            self.entry(&span.kind).gold += 1;
        }
        for span in &pred {
            let tp = usize::from(gold.binary_search(span).is_ok());
            let counts = self.entry(&span.kind);
            counts.predicted += 1;
            counts.tp += tp;
        }
    }

    fn entry(&mut self, kind: &str) -> &mut Counts {
        self.counts.entry(kind.to_owned()).or_default()
    }

    /// Adds all counts of `other` (e.g. to pool episodes).
    pub fn merge(&mut self, other: &Scorer) {
        for (kind, c) in &other.counts {
            let counts = self.entry(kind);
            counts.tp += c.tp;
            counts.predicted += c.predicted;
            counts.gold += c.gold;
        }
    }

    /// Micro-averaged scores: counts summed over all types, then divided. With no gold and no
    /// predicted entity at all every score is 0 (seqeval's default).
    pub fn micro(&self) -> Prf {
        let (tp, predicted, gold) = self.counts.values().fold((0, 0, 0), |(t, p, g), c| {
            (t + c.tp, p + c.predicted, g + c.gold)
        });
        Prf::from_counts(tp, predicted, gold)
    }

    /// Scores of every type seen in the gold or the predictions, sorted by type name (the rows of
    /// seqeval's `classification_report`).
    pub fn per_type(&self) -> Vec<(String, Prf)> {
        self.counts
            .iter()
            .map(|(kind, c)| (kind.clone(), Prf::from_counts(c.tp, c.predicted, c.gold)))
            .collect()
    }
}

/// Scores over a set of few-shot episodes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpisodeSummary {
    /// Micro scores over all entities of all episodes (every episode's counts pooled).
    pub micro: Prf,
    /// Mean of the per-episode micro F1; 0 with no episodes.
    pub mean_f1: f64,
    /// Sample standard deviation (n − 1 denominator) of the per-episode F1; 0 with fewer than
    /// two episodes.
    pub std_f1: f64,
    /// Number of episodes.
    pub episodes: usize,
    /// Episodes with neither gold nor predicted entities. Their F1 is 0 (seqeval's value) and they
    /// are included in `mean_f1` and `std_f1`; they add nothing to `micro`.
    pub empty: usize,
}

/// Summarises per-episode scorers: pooled micro scores, and mean ± sample standard deviation of
/// each episode's own micro F1 (an episode without gold and predicted entities scores 0).
pub fn episode_summary(per_episode: &[Scorer]) -> EpisodeSummary {
    let mut pooled = Scorer::new();
    let mut f1s = Vec::with_capacity(per_episode.len());
    let mut empty = 0;
    for episode in per_episode {
        pooled.merge(episode);
        let prf = episode.micro();
        if prf.gold == 0 && prf.predicted == 0 {
            empty += 1;
        }
        f1s.push(prf.f1);
    }
    let n = f1s.len();
    let mean_f1 = if n == 0 {
        0.0
    } else {
        f1s.iter().sum::<f64>() / n as f64
    };
    let std_f1 = if n < 2 {
        0.0
    } else {
        (f1s.iter().map(|f| (f - mean_f1).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    EpisodeSummary {
        micro: pooled.micro(),
        mean_f1,
        std_f1,
        episodes: n,
        empty,
    }
}

/// A plain-text table in the spirit of conlleval's output: one row per type (sorted by name),
/// then a `micro` row; counts, then precision, recall and F1 in percent with two decimals.
pub fn report(scorer: &Scorer) -> String {
    let rows = scorer.per_type();
    let width = rows
        .iter()
        .map(|(kind, _)| kind.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>6}  {:>6}  {:>6}  {:>9}  {:>7}  {:>7}",
        "type", "tp", "pred", "gold", "precision", "recall", "f1"
    );
    let mut line = |name: &str, prf: &Prf| {
        let pad = width.saturating_sub(name.chars().count());
        let _ = writeln!(
            out,
            "{name}{:pad$}  {:>6}  {:>6}  {:>6}  {:>8.2}%  {:>6.2}%  {:>6.2}%",
            "",
            prf.tp,
            prf.predicted,
            prf.gold,
            100.0 * prf.precision,
            100.0 * prf.recall,
            100.0 * prf.f1,
        );
    };
    for (kind, prf) in &rows {
        line(kind, prf);
    }
    line("micro", &scorer.micro());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    fn sp(start: usize, end: usize, kind: &str) -> Span {
        Span {
            start,
            end,
            kind: kind.to_owned(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn empty_and_all_outside() {
        let none: [&str; 0] = [];
        let mut scorer = Scorer::new();
        scorer.add(&none, &none, Scheme::Bio).expect("empty");
        scorer
            .add(&tags("O O"), &tags("O O"), Scheme::Bio)
            .expect("all O");
        assert_eq!(scorer.micro(), Prf::default());
        assert!(scorer.per_type().is_empty());
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut scorer = Scorer::new();
        let err = scorer
            .add(&tags("O B-PER"), &tags("O"), Scheme::Bio)
            .expect_err("length mismatch");
        assert!(matches!(err, Error::Input(_)), "{err}");
        for (bad, scheme) in [
            ("O E-PER", Scheme::Bio),
            ("B- O", Scheme::Bio),
            ("PER", Scheme::Bio),
            ("b-PER", Scheme::Bio),
            ("X-PER", Scheme::Bioes),
            ("BI-PER", Scheme::Bioes),
        ] {
            let t = tags(bad);
            assert!(scorer.add(&t, &t, scheme).is_err(), "{bad:?} accepted");
            let outside = vec!["O"; t.len()];
            let err = scorer
                .add(&outside, &t, scheme)
                .expect_err("bad prediction");
            assert!(err.to_string().contains("prediction: tag"), "{err}");
        }
        assert_eq!(scorer, Scorer::new());
    }

    #[test]
    fn per_type_and_micro() {
        // gold: PER(0,2) LOC(3,4) LOC(5,6) ORG(7,8)
        // pred: PER(0,2) LOC(3,4) LOC(5,7) MISC(7,8)
        let gold = tags("B-PER I-PER O B-LOC O B-LOC O B-ORG");
        let pred = tags("B-PER I-PER O B-LOC O B-LOC I-LOC B-MISC");
        let mut scorer = Scorer::new();
        scorer.add(&gold, &pred, Scheme::Bio).expect("valid");
        let rows = scorer.per_type();
        let names: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["LOC", "MISC", "ORG", "PER"]);
        assert_eq!(rows[0].1, Prf::from_counts(1, 2, 2));
        assert!(close(rows[0].1.precision, 0.5) && close(rows[0].1.f1, 0.5));
        assert_eq!(
            rows[1].1,
            Prf {
                tp: 0,
                predicted: 1,
                gold: 0,
                ..Prf::default()
            }
        );
        assert_eq!(
            rows[2].1,
            Prf {
                tp: 0,
                predicted: 0,
                gold: 1,
                ..Prf::default()
            }
        );
        assert_eq!(
            rows[3].1,
            Prf {
                precision: 1.0,
                recall: 1.0,
                f1: 1.0,
                tp: 1,
                predicted: 1,
                gold: 1
            }
        );
        let micro = scorer.micro();
        assert_eq!((micro.tp, micro.predicted, micro.gold), (2, 4, 4));
        assert!(close(micro.precision, 0.5) && close(micro.recall, 0.5) && close(micro.f1, 0.5));

        let table = report(&scorer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(lines[0].starts_with("type "), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["LOC", "1", "2", "2", "50.00%", "50.00%", "50.00%"]
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["micro", "2", "4", "4", "50.00%", "50.00%", "50.00%"]
        );
    }

    #[test]
    fn spans_match_exactly_and_repeats_count_once() {
        let mut scorer = Scorer::new();
        let gold = [sp(0, 2, "PER"), sp(0, 2, "PER")];
        let pred = [
            sp(0, 2, "PER"),
            sp(0, 2, "PER"),
            sp(0, 1, "PER"),
            sp(0, 2, "LOC"),
        ];
        scorer.add_spans(&gold, &pred);
        let micro = scorer.micro();
        assert_eq!((micro.tp, micro.predicted, micro.gold), (1, 3, 1));
        assert!(close(micro.precision, 1.0 / 3.0) && close(micro.recall, 1.0));
        assert!(close(micro.f1, 0.5));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Scorer::new();
        a.add(&tags("B-PER O"), &tags("B-PER O"), Scheme::Bio)
            .expect("valid");
        let mut b = Scorer::new();
        b.add(&tags("B-LOC B-PER"), &tags("O B-PER"), Scheme::Bio)
            .expect("valid");
        let mut both = Scorer::new();
        both.add(&tags("B-PER O"), &tags("B-PER O"), Scheme::Bio)
            .expect("valid");
        both.add(&tags("B-LOC B-PER"), &tags("O B-PER"), Scheme::Bio)
            .expect("valid");
        a.merge(&b);
        assert_eq!(a, both);
        let micro = a.micro();
        assert_eq!((micro.tp, micro.predicted, micro.gold), (2, 2, 3));
    }

    #[test]
    fn episode_mean_and_sample_std() {
        // episode 1: tp 1, pred 1, gold 1 -> F1 1
        // episode 2: tp 1, pred 2, gold 2 -> P 1/2, R 1/2, F1 1/2
        // episode 3: tp 0, pred 1, gold 1 -> F1 0
        // mean 1/2; sample variance ((1/2)^2 + 0 + (1/2)^2) / 2 = 1/4 -> std 1/2
        // pooled: tp 2, pred 4, gold 4 -> 1/2
        let mut e1 = Scorer::new();
        e1.add(&tags("B-PER O"), &tags("B-PER O"), Scheme::Bio)
            .expect("valid");
        let mut e2 = Scorer::new();
        e2.add(&tags("B-LOC O B-ORG"), &tags("B-LOC B-ORG O"), Scheme::Bio)
            .expect("valid");
        let mut e3 = Scorer::new();
        e3.add(&tags("B-PER I-PER"), &tags("B-PER O"), Scheme::Bio)
            .expect("valid");
        let s = episode_summary(&[e1.clone(), e2.clone(), e3.clone()]);
        assert_eq!(s.episodes, 3);
        assert_eq!(s.empty, 0);
        assert!(close(s.mean_f1, 0.5), "{s:?}");
        assert!(close(s.std_f1, 0.5), "{s:?}");
        assert_eq!((s.micro.tp, s.micro.predicted, s.micro.gold), (2, 4, 4));
        assert!(close(s.micro.f1, 0.5));

        // An episode with nothing to find and nothing found scores 0 and counts in the mean.
        let s = episode_summary(&[e1, Scorer::new()]);
        assert_eq!((s.episodes, s.empty), (2, 1));
        assert!(close(s.mean_f1, 0.5));
        assert!(close(s.std_f1, std::f64::consts::FRAC_1_SQRT_2));
        assert!(close(s.micro.f1, 1.0));

        assert_eq!(episode_summary(&[]), EpisodeSummary::default());
        let one = episode_summary(&[e2]);
        assert!(close(one.mean_f1, 0.5) && one.std_f1 == 0.0);
    }
}
