//! Interleaved blocks split by the floor's level.
//!
//! This VM's cross-core floor sits on one of a few levels (about 80, 130 and
//! 500 ns round trip here) and moves between them within seconds. An
//! interleaved scenario runs a floor block and then one block of each kind, a
//! few milliseconds in all, so every block of one round sees the same level.
//! Each kind's p50 is taken per block; a round is on the *high* level when its
//! floor block's p50 is more than twice the lowest floor block's of the run,
//! else on the *low* level. Ratios are paired: one kind's block p50 over
//! another's in the same round, then the median over the rounds of a level.
//! A run spent entirely on the high level has only "low" rounds by this
//! rule, so each level also records its floor (`low_level_floor_ns`,
//! `high_level_floor_ns`), and the summary classifies every run's levels
//! again against the lowest floor of all runs.

/// The p50s of one round of blocks, in ns, one per kind; kind 0 is the floor.
pub type Round = Vec<u64>;

/// A round counts as high-level above this many times the lowest floor p50.
pub const HIGH_LEVEL: u64 = 2;

/// The median over the rounds of each level of `kind`'s block p50 over
/// `other`'s: (low, high), `None` for a level with no round.
pub fn paired(rounds: &[Round], kind: usize, other: usize) -> (Option<f64>, Option<f64>) {
    let (low, high) = split(rounds);
    let med = |rs: &[&Round]| {
        let v: Vec<f64> = rs
            .iter()
            .filter(|r| r[other] > 0)
            .map(|r| r[kind] as f64 / r[other] as f64)
            .collect();
        median(v)
    };
    (med(&low), med(&high))
}

/// How many rounds were on the low and on the high level.
pub fn counts(rounds: &[Round]) -> (usize, usize) {
    let (low, high) = split(rounds);
    (low.len(), high.len())
}

fn split(rounds: &[Round]) -> (Vec<&Round>, Vec<&Round>) {
    let lowest = rounds.iter().map(|r| r[0]).filter(|&f| f > 0).min();
    rounds
        .iter()
        .partition(|r| lowest.is_none_or(|l| r[0] <= HIGH_LEVEL * l))
}

fn median(v: Vec<f64>) -> Option<f64> {
    crate::summary::Spread::of(v).map(|s| s.median)
}

/// Extras for the subject kind's outcome: rounds per level, then for each
/// `(other kind, low key, high key)` the paired ratio on each level.
pub fn extras(
    rounds: &[Round],
    subject: usize,
    others: &[(usize, &'static str, &'static str)],
) -> Vec<(&'static str, f64)> {
    let (low, high) = counts(rounds);
    let mut out = vec![
        ("low_level_rounds", low as f64),
        ("high_level_rounds", high as f64),
    ];
    let (low_rounds, high_rounds) = split(rounds);
    for (key, rs) in [
        ("low_level_floor_ns", low_rounds),
        ("high_level_floor_ns", high_rounds),
    ] {
        let floors: Vec<f64> = rs
            .iter()
            .map(|r| r[0] as f64)
            .filter(|&f| f > 0.0)
            .collect();
        out.extend(median(floors).map(|f| (key, f)));
    }
    for &(other, low_key, high_key) in others {
        let (l, h) = paired(rounds, subject, other);
        out.extend(l.map(|v| (low_key, v)));
        out.extend(h.map(|v| (high_key, v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_at_twice_the_lowest_floor_and_pair_within_a_round() {
        // floor, subject, peer
        let rounds = vec![
            vec![100, 110, 150],
            vec![130, 140, 200],
            vec![500, 600, 550],
            vec![0, 0, 0], // an empty round (no samples kept) is ignored for pairing
        ];
        assert_eq!(counts(&rounds[..3]), (2, 1));
        let (low, high) = paired(&rounds[..3], 1, 2);
        assert_eq!(low, Some((110.0 / 150.0 + 140.0 / 200.0) / 2.0));
        assert_eq!(high, Some(600.0 / 550.0));
        let (low, _) = paired(&rounds, 1, 0);
        assert_eq!(low, Some((110.0 / 100.0 + 140.0 / 130.0) / 2.0));
    }
}
