//! The `git-tally` binary: parse arguments, run the library, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = git_tally::cli::Cli::parse();
    match git_tally::cmd::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("git-tally: {e:#}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
