//! Any other JSON (SPEC §3.5). No rules: every path is inferred from its values and key
//! name by the engine (counters, times, keyed arrays, ordered unions, 3-way scalars).

use super::Profile;
use serde_json::json;

pub static GENERIC: Profile = Profile {
    name: "generic",
    description: "any JSON: objects by key, numbers as counters, times later, arrays by id",
    detect: |_| true,
    envelope: None,
    envelope_rules: &[],
    rules: &[],
    records: None,
    finish: None,
    strict: false,
    empty: || json!({}),
    apply: None,
    apply_batch: None,
    invariants: |_, _| {},
};
