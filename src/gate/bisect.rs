//! Finding the commit that turned the check red, as a pure state machine: the runner asks
//! [`Bisect::next_probe`] which commit to test, runs the check there (or takes a known result),
//! and reports it with [`Bisect::record`], until `next` says there is nothing left to
//! test and [`Bisect::culprits`] names the range.
//!
//! Positions: 0 is the newest green ancestor, `1..=n` the commits after it on the first
//! parent line, oldest first; `n` is the red commit. The first red position lies between
//! the newest known green and the oldest known red; each test halves that span, so `n`
//! candidates need at most ⌈log₂ n⌉ runs. A commit the check cannot test (exit 125, as in
//! `git bisect run`) is skipped; untestable commits next to the first red one are blamed
//! with it.
//!
//! The file-name heuristic (Findit's): when the failure output names a file one of the
//! commits touched, that commit and its parent are tested first (the parent first when
//! the suspect is nearer the red end), which confirms a right guess in two runs. It is
//! only followed when even a wrong guess costs at most one run more than plain halving,
//! so 16 commits never need more than 5.

use std::collections::{BTreeSet, VecDeque};

/// What one run of the check said about one commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Green,
    Red,
    /// Exit status 125: this commit cannot be tested.
    Untestable,
}

#[derive(Clone, Debug)]
pub struct Bisect {
    /// Newest position known green.
    good: usize,
    /// Oldest position known red.
    bad: usize,
    untestable: BTreeSet<usize>,
    /// The heuristic's probes, in order, while they still tell something.
    planned: VecDeque<usize>,
}

/// ⌈log₂ n⌉: runs that halving needs to pick one of `n` candidates.
pub fn halving_runs(n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// The most runs the heuristic can cost with suspect `h` between `good` and `bad`, testing
/// its parent first (`parent_first`) or the suspect first.
fn hinted_worst(good: usize, bad: usize, h: usize, parent_first: bool) -> usize {
    let after = bad - h; // candidates left if the suspect is green
    let before = h - 1 - good; // candidates left if its parent is red
    if h == good + 1 {
        // Its parent is the known green commit: test the suspect alone.
        1 + halving_runs(after)
    } else if h == bad {
        // The suspect is the known red commit: test its parent alone.
        1 + halving_runs(before)
    } else if parent_first {
        (1 + halving_runs(before)).max(2 + halving_runs(after))
    } else {
        (1 + halving_runs(after)).max(2 + halving_runs(before))
    }
}

impl Bisect {
    /// A bisection of `n` commits after the green one (the last is the red one), with
    /// `hint` the position of the commit the failure output points at, if any.
    pub fn new(n: usize, hint: Option<usize>) -> Bisect {
        let mut b = Bisect {
            good: 0,
            bad: n,
            untestable: BTreeSet::new(),
            planned: VecDeque::new(),
        };
        if let Some(h) = hint.filter(|h| (1..=n).contains(h)) {
            // Whichever order costs less when the guess is wrong; a suspect near the
            // green end is tested before its parent, one near the red end after it.
            let parent_first = hinted_worst(0, n, h, true) <= hinted_worst(0, n, h, false);
            if hinted_worst(0, n, h, parent_first) <= halving_runs(n) + 1 {
                let (parent, suspect) = ((h > 1).then(|| h - 1), (h < n).then_some(h));
                let order = if parent_first {
                    [parent, suspect]
                } else {
                    [suspect, parent]
                };
                b.planned.extend(order.into_iter().flatten());
            }
        }
        b
    }

    /// The position to test next, or `None` when the culprits are known.
    pub fn next_probe(&mut self) -> Option<usize> {
        if self.bad <= self.good + 1 {
            return None;
        }
        while let Some(p) = self.planned.pop_front() {
            if self.good < p && p < self.bad && !self.untestable.contains(&p) {
                // Put it back: it stays next until its result is recorded.
                self.planned.push_front(p);
                return Some(p);
            }
        }
        let mid = self.good + (self.bad - self.good) / 2;
        (self.good + 1..self.bad)
            .filter(|p| !self.untestable.contains(p))
            .min_by_key(|p| (p.abs_diff(mid), *p))
    }

    pub fn record(&mut self, position: usize, outcome: Outcome) {
        if self.planned.front() == Some(&position) {
            self.planned.pop_front();
        }
        match outcome {
            Outcome::Green => self.good = self.good.max(position),
            Outcome::Red => self.bad = self.bad.min(position),
            Outcome::Untestable => {
                self.untestable.insert(position);
            }
        }
    }

    /// The positions blamed, oldest first: the first red commit and the untestable ones
    /// just before it. Only meaningful once [`Bisect::next_probe`] returns `None`. The commit
    /// before the first of them is green and the last of them is red.
    pub fn culprits(&self) -> std::ops::RangeInclusive<usize> {
        self.good + 1..=self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bisects `n` commits where `first_red` is the culprit and `untestable` cannot be
    /// tested; returns the culprits and the runs it took.
    fn run(
        n: usize,
        first_red: usize,
        hint: Option<usize>,
        untestable: &[usize],
    ) -> (Vec<usize>, usize) {
        let mut b = Bisect::new(n, hint);
        let mut runs = 0;
        let mut tested = BTreeSet::new();
        while let Some(p) = b.next_probe() {
            assert!(tested.insert(p), "position {p} tested twice");
            runs += 1;
            let o = if untestable.contains(&p) {
                Outcome::Untestable
            } else if p >= first_red {
                Outcome::Red
            } else {
                Outcome::Green
            };
            b.record(p, o);
            assert!(runs <= n, "runaway bisection");
        }
        (b.culprits().collect(), runs)
    }

    #[test]
    fn halving_runs_is_the_ceiling_of_log2() {
        let got: Vec<usize> = [1, 2, 3, 4, 5, 8, 9, 16, 17].map(halving_runs).to_vec();
        assert_eq!(got, [0, 1, 2, 2, 3, 3, 4, 4, 5]);
    }

    #[test]
    fn one_commit_needs_no_run() {
        assert_eq!(run(1, 1, None, &[]), (vec![1], 0));
    }

    #[test]
    fn every_culprit_among_16_is_found_in_at_most_4_runs() {
        for culprit in 1..=16 {
            let (found, runs) = run(16, culprit, None, &[]);
            assert_eq!(found, vec![culprit]);
            assert!(runs <= 4, "culprit {culprit}: {runs} runs");
        }
    }

    #[test]
    fn the_probe_order_is_halving() {
        // 16 commits, culprit 5: 8 red, 4 green, 6 red, 5 red.
        let mut b = Bisect::new(16, None);
        let mut order = Vec::new();
        while let Some(p) = b.next_probe() {
            order.push(p);
            b.record(p, if p >= 5 { Outcome::Red } else { Outcome::Green });
        }
        assert_eq!(order, [8, 4, 6, 5]);
    }

    #[test]
    fn a_right_hint_confirms_the_culprit_in_two_runs() {
        let (found, runs) = run(16, 11, Some(11), &[]);
        assert_eq!((found, runs), (vec![11], 2));
        // At either end one run is enough.
        assert_eq!(run(16, 1, Some(1), &[]), (vec![1], 1));
        assert_eq!(run(16, 16, Some(16), &[]), (vec![16], 1));
    }

    #[test]
    fn a_right_hint_anywhere_among_16_takes_at_most_two_runs() {
        for c in 1..=16 {
            let (found, runs) = run(16, c, Some(c), &[]);
            assert_eq!(found, vec![c]);
            assert!(runs <= 2, "culprit {c}: {runs} runs");
        }
    }

    #[test]
    fn a_wrong_hint_costs_at_most_one_run_more_than_halving() {
        for n in 1..=40 {
            for culprit in 1..=n {
                for hint in 1..=n {
                    let (found, runs) = run(n, culprit, Some(hint), &[]);
                    assert_eq!(found, vec![culprit], "n {n} culprit {culprit} hint {hint}");
                    assert!(
                        runs <= halving_runs(n) + 1,
                        "n {n} culprit {culprit} hint {hint}: {runs} runs"
                    );
                }
            }
        }
        // The figure: 16 commits, any culprit, any hint, at most 5 runs.
        let worst = (1..=16)
            .flat_map(|c| (1..=16).map(move |h| run(16, c, Some(h), &[]).1))
            .max();
        assert_eq!(worst, Some(5));
    }

    #[test]
    fn untestable_commits_next_to_the_culprit_are_blamed_with_it() {
        // Culprit 6; 4 and 5 cannot be tested: the first red lies in 4..=6.
        let (found, _) = run(8, 6, None, &[4, 5]);
        assert_eq!(found, vec![4, 5, 6]);
        // Untestable commits elsewhere are stepped around.
        let (found, _) = run(8, 6, None, &[2, 3]);
        assert_eq!(found, vec![6]);
    }

    proptest::proptest! {
        #[test]
        fn the_culprit_range_holds_the_first_red_commit(
            n in 1usize..40,
            culprit_seed in 0usize..1000,
            hint_seed in proptest::option::of(0usize..1000),
            untestable in proptest::collection::vec(0usize..1000, 0..6),
        ) {
            let culprit = culprit_seed % n + 1;
            let hint = hint_seed.map(|h| h % n + 1);
            // The red end is never untestable (it was tested red).
            let untestable: Vec<usize> =
                untestable.iter().map(|u| u % n + 1).filter(|u| *u != n).collect();
            let (found, runs) = run(n, culprit, hint, &untestable);
            proptest::prop_assert!(found.contains(&culprit));
            // Everything blamed before the red end could not be tested.
            let last = found.last().copied();
            for p in &found {
                proptest::prop_assert!(Some(*p) == last || untestable.contains(p));
            }
            if untestable.is_empty() {
                let bound = halving_runs(n) + usize::from(hint.is_some());
                proptest::prop_assert!(runs <= bound);
            }
        }
    }
}
