//! The exactly-once check: what the generator saw answered and sent, per recipient,
//! against what the server's reports say it recorded.
//!
//! For each recipient: `answered ≤ recorded ≤ sent`. A hit answered but not
//! recorded is **lost**; a recorded hit beyond what was ever sent is **doubled**.
//! Without faults every request is answered before the run ends, so answered = sent
//! and the check is exact. After a `kill -9`, requests in flight may have been
//! recorded without their answer reaching us; that is neither loss nor doubling.

use std::time::{Duration, Instant};

use crate::api::{self, Prepared, Recorded};
use crate::procs::Result;

/// Which counter a load drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pixel,
    Click,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pixel => "pixel",
            Kind::Click => "click",
        }
    }
}

/// Per email, per recipient: (answered, sent).
pub type Expected = Vec<Vec<(u64, u64)>>;

#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub answered: u64,
    pub sent: u64,
    pub recorded: u64,
    pub lost: u64,
    pub doubled: u64,
    /// Time from the first reading of the reports to the last.
    pub settled_after: Duration,
    /// How many times the reports were read (1: complete at the first reading).
    pub readings: u32,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.doubled == 0
    }
}

/// Compares one reading of the reports with what was expected.
pub fn compare(kind: Kind, expected: &Expected, got: &[Vec<Recorded>]) -> Verdict {
    let mut v = Verdict::default();
    for (e, g) in expected.iter().zip(got) {
        for (&(answered, sent), &(opens, clicks)) in e.iter().zip(g) {
            let rec = match kind {
                Kind::Pixel => opens,
                Kind::Click => clicks,
            };
            v.answered += answered;
            v.sent += sent;
            v.recorded += rec;
            v.lost += answered.saturating_sub(rec);
            v.doubled += rec.saturating_sub(sent);
        }
    }
    v
}

/// Reads the reports until nothing is missing or `settle` has passed (reports
/// derived off the hot path may trail for a moment), then gives the verdict.
pub fn verify(
    base: &str,
    prep: &Prepared,
    kind: Kind,
    expected: &Expected,
    settle: Duration,
) -> Result<Verdict> {
    let t0 = Instant::now();
    let mut readings = 0;
    loop {
        let got = api::recorded(base, prep)?;
        readings += 1;
        let mut v = compare(kind, expected, &got);
        v.settled_after = t0.elapsed();
        v.readings = readings;
        if v.lost == 0 || t0.elapsed() >= settle {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_and_doubled_per_recipient() {
        // Two recipients: one exact, one with an unanswered request in flight.
        let expected = vec![vec![(3, 3), (2, 3)]];
        let ok = compare(Kind::Pixel, &expected, &[vec![(3, 9), (3, 0)]]);
        assert_eq!((ok.lost, ok.doubled, ok.recorded), (0, 0, 6));
        let lost = compare(Kind::Pixel, &expected, &[vec![(2, 0), (2, 0)]]);
        assert_eq!((lost.lost, lost.doubled), (1, 0));
        let doubled = compare(Kind::Click, &expected, &[vec![(0, 4), (0, 2)]]);
        assert_eq!((doubled.lost, doubled.doubled), (0, 1));
        // A loss on one recipient is not hidden by a surplus on another.
        let both = compare(Kind::Pixel, &expected, &[vec![(2, 0), (4, 0)]]);
        assert_eq!((both.lost, both.doubled), (1, 1));
    }
}
