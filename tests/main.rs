//! Integration tests: one binary (see Cargo.toml), one module per area.

mod adversary;
mod badinput;

mod cases;
mod collect;
mod common;
mod exact;
mod failing;
mod filemode;
mod git;
mod histories;
mod imports;
mod ledger;
mod migrate;

mod ops;
mod pricing;
mod props;
mod reports;
mod sync;
mod syncsteps;
