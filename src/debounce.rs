//! Debouncing syncs per usage file (SPEC §6, after the seed's cloud-sync plan). Pure: the
//! caller passes the time, so the rules are tested with an injected clock.
//!
//! Window W: a change syncs at once if no sync ran in the last W; a change inside the
//! window is queued, a newer one replacing it; when the window ends the queued change
//! syncs and a new window starts; an empty window expires silently; shutdown syncs what
//! is queued. W = 0 syncs every change.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

struct Slot<P> {
    window_end: Option<Duration>,
    queued: Option<P>,
}

pub struct Debouncer<K, P> {
    window: Duration,
    slots: HashMap<K, Slot<P>>,
}

impl<K: Hash + Eq + Clone, P> Debouncer<K, P> {
    pub fn new(window: Duration) -> Self {
        Debouncer { window, slots: HashMap::new() }
    }

    /// A change of `key` at `now`: `Some(payload)` to sync now, `None` when queued.
    pub fn change(&mut self, key: K, payload: P, now: Duration) -> Option<P> {
        let window = self.window;
        let slot = self.slots.entry(key).or_insert(Slot { window_end: None, queued: None });
        match slot.window_end {
            Some(end) if now < end && !window.is_zero() => {
                slot.queued = Some(payload);
                None
            }
            _ => {
                slot.window_end = Some(now.saturating_add(window));
                slot.queued = None;
                Some(payload)
            }
        }
    }

    /// Windows that ended by `now`: their queued changes sync (a new window starts); empty
    /// ones expire.
    pub fn tick(&mut self, now: Duration) -> Vec<(K, P)> {
        let mut due = Vec::new();
        for (key, slot) in &mut self.slots {
            if let Some(end) = slot.window_end {
                if now >= end {
                    match slot.queued.take() {
                        Some(p) => {
                            slot.window_end = Some(now.saturating_add(self.window));
                            due.push((key.clone(), p));
                        }
                        None => slot.window_end = None,
                    }
                }
            }
        }
        due
    }

    /// When the next window ends, if any (the caller can sleep until then).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.slots.values().filter_map(|s| s.window_end).min()
    }

    /// Everything queued, for a final sync.
    pub fn shutdown(&mut self) -> Vec<(K, P)> {
        self.slots.iter_mut().filter_map(|(k, s)| s.queued.take().map(|p| (k.clone(), p))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Drives a debouncer second by second; returns (time, payload) of every sync.
    fn run(window: u64, changes: &[(u64, &'static str, u32)], shutdown: u64) -> Vec<(u64, &'static str, u32)> {
        let mut d = Debouncer::new(s(window));
        let mut syncs = Vec::new();
        for t in 0..shutdown {
            for (k, p) in d.tick(s(t)) {
                syncs.push((t, k, p));
            }
            for &(at, key, payload) in changes {
                if at == t {
                    if let Some(p) = d.change(key, payload, s(t)) {
                        syncs.push((t, key, p));
                    }
                }
            }
        }
        for (k, p) in d.shutdown() {
            syncs.push((shutdown, k, p));
        }
        syncs
    }

    #[test]
    fn the_seed_timeline() {
        // Changes at 0, 1, 2, 21, 22, 23 (each carrying its time as the state), shutdown
        // at 26, window 10: syncs at 0, 10, 21, 26 with the latest state each time.
        let changes: Vec<_> = [0, 1, 2, 21, 22, 23].iter().map(|&t| (t, "usage.json", t as u32)).collect();
        assert_eq!(
            run(10, &changes, 26),
            [(0, "usage.json", 0), (10, "usage.json", 2), (21, "usage.json", 21), (26, "usage.json", 23)]
        );
    }

    #[test]
    fn a_window_longer_than_a_clock_holds_is_for_ever() {
        let mut d = Debouncer::new(Duration::MAX);
        assert_eq!(d.change("a", 1, Duration::from_secs(5)), Some(1));
        assert_eq!(d.change("a", 2, Duration::from_secs(6)), None, "queued");
        assert!(d.tick(Duration::from_secs(1 << 40)).is_empty());
    }

    #[test]
    fn files_debounce_independently() {
        let changes = [(0, "a", 0), (1, "b", 1), (3, "a", 3), (4, "b", 4), (5, "b", 5)];
        let mut got = run(10, &changes, 30);
        got.sort();
        assert_eq!(got, [(0, "a", 0), (1, "b", 1), (10, "a", 3), (11, "b", 5)]);
    }

    #[test]
    fn a_zero_window_syncs_every_change() {
        let changes = [(0, "a", 0), (1, "a", 1), (2, "a", 2)];
        assert_eq!(run(0, &changes, 5), [(0, "a", 0), (1, "a", 1), (2, "a", 2)]);
    }

    #[test]
    fn an_empty_window_expires_silently() {
        let changes = [(0, "a", 0), (15, "a", 15)];
        assert_eq!(run(10, &changes, 40), [(0, "a", 0), (15, "a", 15)]);
    }
}
