//! Integration tests: one binary (see Cargo.toml), one module per area.

mod badinput;
mod cases;
mod collect;
mod common;
mod failing;
mod filemode;
mod git;
mod ledger;
mod ops;
mod props;
mod reports;
mod sync;
