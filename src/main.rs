//! The `git-tally` binary: parse arguments, run the library, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    // `git tally status | head` must end quietly, not report (or panic on) a broken pipe.
    let _ = signal_hook::flag::register_conditional_default(
        signal_hook::consts::SIGPIPE,
        Arc::clone(git_tally::sigpipe_ends_process()),
    );
    let cli = git_tally::cli::Cli::parse();
    match git_tally::cmd::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("git-tally: {e:#}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
