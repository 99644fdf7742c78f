//! Integration tests: one binary (see Cargo.toml), one module per area.

mod badinput;
mod cases;
mod collect;
mod common;
mod failing;
mod filemode;
mod git;
mod histories;
mod imports;
mod ledger;
mod ops;
mod pricing;
mod props;
mod reports;
mod sync;
