//! The embedded store's card state (see `store::cards`): two redb tables.
//!
//! `card_marks` maps (user, card id) to (kind, time): kind 0 is dismissed
//! (forgotten after the time), 1 snoozed (until the time); `card_marks_by_time`
//! indexes (time, user, card id), so every write and the retention sweep remove
//! what has passed without scanning. Writes are ordinary durable transactions.

use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};

use super::super::cards::Mark;
use super::super::Result;
use super::Embedded;

/// (user, card id) -> (0 dismissed | 1 snoozed, until ms).
const MARKS: TableDefinition<(u64, &str), (u8, u64)> = TableDefinition::new("card_marks");
/// (until ms, user, card id).
const BY_TIME: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("card_marks_by_time");

/// Above every card id (ids are ASCII letters, digits and `_`).
const ID_END: &str = "~";

fn encode(m: Mark) -> (u8, u64) {
    match m {
        Mark::Dismissed(t) => (0, t),
        Mark::Snoozed(t) => (1, t),
    }
}

fn decode((kind, t): (u8, u64)) -> Mark {
    if kind == 0 {
        Mark::Dismissed(t)
    } else {
        Mark::Snoozed(t)
    }
}

/// Removes every mark whose time is at or before `now_ms`; returns how many.
fn prune(tx: &WriteTransaction, now_ms: u64) -> Result<usize> {
    let mut by_time = tx.open_table(BY_TIME)?;
    let mut marks = tx.open_table(MARKS)?;
    let due: Vec<(u64, u64, String)> = by_time
        .range((0, 0, "")..=(now_ms, u64::MAX, ID_END))?
        .map(|x| {
            x.map(|(k, _)| {
                let (t, u, id) = k.value();
                (t, u, id.to_owned())
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    for (t, u, id) in &due {
        by_time.remove((*t, *u, id.as_str()))?;
        marks.remove((*u, id.as_str()))?;
    }
    Ok(due.len())
}

impl Embedded {
    pub(crate) fn mark_card(&self, user: u64, id: &str, mark: Mark, now_ms: u64) -> Result<()> {
        let tx = self.db().begin_write()?;
        prune(&tx, now_ms)?;
        {
            let mut marks = tx.open_table(MARKS)?;
            let mut by_time = tx.open_table(BY_TIME)?;
            let old = marks.get((user, id))?.map(|g| decode(g.value()));
            if let (Mark::Snoozed(_), Some(Mark::Dismissed(_))) = (mark, old) {
                // A dismissed card stays dismissed (expired marks were pruned above).
                drop((marks, by_time));
                tx.abort()?;
                return Ok(());
            }
            if let Some(old) = old {
                let (_, t) = encode(old);
                by_time.remove((t, user, id))?;
            }
            let (kind, t) = encode(mark);
            marks.insert((user, id), (kind, t))?;
            by_time.insert((t, user, id), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn card_marks(&self, user: u64, now_ms: u64) -> Result<Vec<(String, Mark)>> {
        let tx = self.db().begin_read()?;
        let marks = match tx.open_table(MARKS) {
            Ok(t) => t,
            // No card was ever dismissed or snoozed.
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in marks.range((user, "")..(user, ID_END))? {
            let (k, v) = row?;
            let m = decode(v.value());
            let (Mark::Dismissed(t) | Mark::Snoozed(t)) = m;
            if t > now_ms {
                out.push((k.value().1.to_owned(), m));
            }
        }
        Ok(out)
    }

    /// Removes the card marks whose time has passed (the retention sweep).
    pub fn sweep_cards(&self, now_ms: u64) -> Result<usize> {
        let tx = self.db().begin_write()?;
        let n = prune(&tx, now_ms)?;
        tx.commit()?;
        Ok(n)
    }
}
