//! `reset` and `clear-history` (SPEC §4b.3): removals are grow-only too. This device
//! records, for every device whose usage it knows, a floor (what the reset hides: its
//! records up to a `seq`, its counters as they are now) or a watermark (what a cleared
//! history stops listing, counts kept). Traffic another device records concurrently lies
//! above the floor and still counts.

use super::shard::{counters_join, Floor, Floors, LedgerFile};
use super::{Ledger, Source};
use crate::error::{Error, Result};

impl Ledger {
    /// Records floors (`reset`) or watermarks (`clear_history`) at what every device holds
    /// now; returns how many devices they cover, summed over the streams.
    pub fn lower(&self, source: &dyn Source, reset: bool) -> Result<usize> {
        let mut n = 0;
        for stream in &self.streams {
            let devices = self.devices(stream, source, false)?;
            let mut floors = self.own_floors(stream)?.unwrap_or(Floors {
                profile: stream.profile,
                device: self.key.clone(),
                floors: Default::default(),
            });
            for (key, d) in &devices {
                let max_seq = d.shards.iter().map(|s| s.max_seq()).max().unwrap_or(0);
                let mut f = Floor { cleared_seq: max_seq, ..Floor::default() };
                if reset {
                    f.reset_seq = max_seq;
                    for s in &d.shards {
                        f.days.insert(s.day.clone(), s.counters.clone());
                    }
                    f.residual = d.residual.clone().unwrap_or_else(|| serde_json::json!({}));
                }
                let joined = match floors.floors.remove(key) {
                    None => f,
                    Some(mut old) => {
                        old.reset_seq = old.reset_seq.max(f.reset_seq);
                        old.cleared_seq = old.cleared_seq.max(f.cleared_seq);
                        for (day, c) in f.days {
                            let c = match old.days.get(&day) {
                                Some(x) => {
                                    counters_join(stream.profile, x, &c).map_err(|e| Error::Failed(e.to_string()))?
                                }
                                None => c,
                            };
                            old.days.insert(day, c);
                        }
                        old.residual = counters_join(stream.profile, &old.residual, &f.residual)
                            .map_err(|e| Error::Failed(e.to_string()))?;
                        old
                    }
                };
                floors.floors.insert(key.clone(), joined);
                n += 1;
            }
            self.write_own(stream, &[("floors.json".into(), LedgerFile::Floors(floors))])?;
        }
        Ok(n)
    }
}
