//! Command-line arguments (clap derive), and nothing else.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "git-tally",
    version,
    about = "Keep LLM/API usage files exact across machines, with git as the store",
    long_about = "git-tally merges usage-statistics files (requests, tokens, cost) semantically and \
exactly, and keeps them in sync between machines through a git remote you already have."
)]
pub struct Cli {
    /// Run as if started in <path> (like git -C).
    #[arg(short = 'C', global = true, value_name = "path")]
    pub dir: Option<PathBuf>,
    /// Read the usage-sync settings from a proxy's YAML config (the PRD's
    /// gitstore.usage-sync section, statistics-file when disabled).
    #[arg(long, global = true, value_name = "FILE")]
    pub proxy_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The git merge driver: merge %O %A %B into %A (see `install`).
    Merge(MergeArgs),
    /// Register the merge driver in git config and write the attribute lines.
    Install(InstallArgs),
    /// Undo `install`.
    Uninstall(InstallArgs),
    /// Explain what is missing for the driver to apply to the usage files.
    Doctor,
    /// Validate usage files against their profile.
    Check(CheckArgs),
    /// Apply usage events (JSON lines on stdin, or --event) to the usage file.
    Record(RecordArgs),
    /// Drain CLIProxyAPI's usage queue (v6.10+) into this device's ledger.
    Collect(CollectArgs),
    /// Commit local usage changes, fetch and integrate (pull-before-write).
    Pull,
    /// Pull, then push; retry rejected pushes; never force.
    Sync,
    /// Pre-shutdown sync: commit locally, then push within a time bound.
    Flush(FlushArgs),
    /// Long-running interval and debounced sync; flush on SIGTERM/SIGINT.
    Daemon,
    /// Repository, lock, pending events and driver state.
    Status(StatusArgs),
    /// Generate or install systemd timer, service and flush units.
    Systemd(SystemdArgs),
    /// Install or remove the git hooks that keep invalid usage files out of history.
    Hooks(HooksArgs),
    /// Totals and breakdowns of the usage file.
    Stats(StatsArgs),
    /// Export records (CSV) or aggregates (JSON).
    Export(ExportArgs),
    /// A self-contained HTML page with charts (no network needed to view it).
    Report(ReportArgs),
    /// Rebuild a missing or corrupt ProxyPal aggregate.json from history.json beside it.
    Rebuild { file: PathBuf },
    /// How the usage file changed over git history (these commits are the backups).
    History(HistoryArgs),
    /// Write the usage file as it was at a revision or date.
    Restore(RestoreArgs),
    /// The semantic change of the usage file between two revisions (or a revision and now).
    Diff(DiffArgs),
    /// A usage file in canonical form (sorted keys): git's textconv for usage files.
    Show { file: PathBuf },
    /// Clear records, keeping aggregates.
    ClearHistory(ConfirmArgs),
    /// Zero the aggregates and clear the records (merges as a reset).
    Reset(ConfirmArgs),
    /// Move this device's usage of a file tally.file no longer names into a configured one.
    Move {
        /// The file no longer in tally.file (as `status` names it).
        from: String,
        /// The configured usage file to count it in (default: the first in tally.file).
        #[arg(long)]
        to: Option<String>,
    },
    /// Import Claude Code transcripts or Codex CLI sessions into usage records.
    Import(ImportArgs),
    /// The price that applies to a model, or `prices update` to refresh the table.
    Prices(PricesArgs),
    /// Two simulated machines and a remote, converging exactly.
    Demo(DemoArgs),
    /// List the known usage-file profiles.
    Profiles,
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The common ancestor (%O); an empty file is an empty document.
    pub base: PathBuf,
    /// Ours (%A); the result is written here.
    pub ours: PathBuf,
    /// Theirs (%B).
    pub theirs: PathBuf,
    /// The path of the file in the repository (%P), for detection and messages.
    #[arg(short = 'p', value_name = "path")]
    pub path: Option<String>,
    /// Conflict marker size (%L).
    #[arg(short = 'l', value_name = "size", default_value_t = 7)]
    pub marker_size: usize,
    /// Label of the ancestor (%S).
    #[arg(short = 's', value_name = "label")]
    pub base_label: Option<String>,
    /// Label of ours (%X).
    #[arg(short = 'x', value_name = "label")]
    pub ours_label: Option<String>,
    /// Label of theirs (%Y).
    #[arg(short = 'y', value_name = "label")]
    pub theirs_label: Option<String>,
    /// Use this profile instead of detecting one.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Register in the global git config (and the global attributes file).
    #[arg(long)]
    pub global: bool,
    /// Write the attributes to .git/info/attributes instead of .gitattributes.
    #[arg(long)]
    pub local_attributes: bool,
    /// Files the driver applies to (default: usage/*.json and usage.json).
    #[arg(long = "pattern", value_name = "GLOB")]
    pub patterns: Vec<String>,
    /// Force a profile for these files (the tally-profile attribute).
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Usage files to validate.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Use this profile instead of detecting one.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// One event as JSON (repeatable); without it, events are read from stdin, one per line.
    #[arg(long = "event", value_name = "JSON")]
    pub events: Vec<String>,
}

/// What `collect` reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectFrom {
    /// CLIProxyAPI v6.10 or later (its usage queue).
    Cliproxyapi,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// What to collect from.
    #[arg(value_enum)]
    pub from: CollectFrom,
    /// redis://host:port (the proxy's RESP listener, on its API port) or http(s)://host:port
    /// (its management API). Default: git config tally.collect.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A file holding the proxy's management key (default: CLIPROXYAPI_MANAGEMENT_KEY, else
    /// git config tally.collectKeyFile). Never give the key itself on the command line.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Drain what is queued now, then exit (no subscription, no polling).
    #[arg(long)]
    pub once: bool,
    /// Records per pop and per durable batch.
    #[arg(long, value_name = "N", default_value_t = crate::collect::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// How often to poll the management API when its queue is empty (http only).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Keep a field that is dropped by default (repeatable). Kept fields stay on this
    /// machine, in .git/tally/collect-kept.jsonl; they are never committed.
    #[arg(long = "keep", value_name = "FIELD", value_enum)]
    pub keep: Vec<crate::collect::KeepField>,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Give up pushing after this long (default: tally.flushTimeout, 20s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// Do it without asking (needed when not run on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo (kept afterwards; default: a temporary directory, removed
    /// at the end unless --keep).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Keep the temporary directory to look around in.
    #[arg(long)]
    pub keep: bool,
    /// Requests each machine serves.
    #[arg(long, default_value_t = 200)]
    pub events: usize,
}

#[derive(Debug, Args)]
pub struct SystemdArgs {
    pub action: SystemdAction,
    /// User units (default).
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// System units (as root).
    #[arg(long)]
    pub system: bool,
    /// Sync interval, 1m or more (default: tally.syncInterval, 15m); 0: no timer, only the
    /// flush at shutdown.
    #[arg(long, value_parser = parse_interval)]
    pub interval: Option<std::time::Duration>,
    /// Write (or remove) the unit files only; do not run systemctl.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SystemdAction {
    /// Print the units.
    Print,
    /// Write the units, enable and start the timer and the shutdown flush.
    Install,
    /// Stop, disable and remove this repository's units.
    Uninstall,
}

/// A duration as humantime reads it, and a bare `0`.
fn parse_interval(s: &str) -> Result<std::time::Duration, humantime::DurationError> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s)
}

#[derive(Debug, Args)]
pub struct HooksArgs {
    #[command(subcommand)]
    pub action: HooksAction,
}

#[derive(Debug, Subcommand)]
pub enum HooksAction {
    /// Install pre-commit, post-merge, post-rewrite and pre-push (keeping existing hooks).
    Install,
    /// Remove them and put back the hooks they replaced.
    Uninstall,
    /// Run one hook (what the installed scripts call).
    Run {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The usage file (default: the first of tally.file).
    pub file: Option<PathBuf>,
    /// Rows by day, week, month, model, provider, api or device.
    #[arg(long, default_value = "day", value_parser = ["day", "week", "month", "model", "provider", "api", "device"])]
    pub by: String,
    #[command(flatten)]
    pub period: PeriodArgs,
    /// Machine-readable output (stable keys, see README).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The usage file (default: the first of tally.file).
    pub file: Option<PathBuf>,
    /// Write the page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    #[command(flatten)]
    pub period: PeriodArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The usage file (default: the first of tally.file).
    pub file: Option<PathBuf>,
    /// csv: one row per record; json: totals and breakdowns.
    #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
    pub format: String,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub period: PeriodArgs,
}

/// The period a report covers and the zone its days are counted in.
#[derive(Debug, Args, Clone, Default)]
pub struct PeriodArgs {
    /// From this day (YYYY-MM-DD, a whole local day), time (RFC 3339) or duration ago (7d, 12h).
    #[arg(long, value_name = "WHEN", value_parser = crate::period::Spec::parse)]
    pub since: Option<crate::period::Spec>,
    /// Up to this day (included), time or duration ago; same forms as --since.
    #[arg(long, value_name = "WHEN", value_parser = crate::period::Spec::parse)]
    pub until: Option<crate::period::Spec>,
    /// Count days in this time zone (IANA name, e.g. Europe/Paris); default: TZ, else the
    /// system's zone.
    #[arg(long, value_name = "NAME", value_parser = crate::period::zone_named)]
    pub timezone: Option<chrono_tz::Tz>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The usage file (default: the first of tally.file).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// At most this many commits.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// From this revision.
    pub from: String,
    /// To this revision (default: the file in the work tree).
    pub to: Option<String>,
    /// The usage file (default: the first of tally.file).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A revision (commit, tag, HEAD~3) or a date git understands (2026-11-01, "3 days ago").
    #[arg(long)]
    pub at: String,
    /// The usage file to restore (default: the first of tally.file).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Write here instead (inside the repository).
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import.
    pub source: ImportSource,
    /// The agent's data directories. claude-code: CLAUDE_CONFIG_DIR, else ~/.claude and
    /// ~/.config/claude (reads projects/**/*.jsonl); codex: CODEX_HOME, else ~/.codex (reads
    /// sessions/**/*.jsonl).
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportSource {
    /// Claude Code transcripts.
    ClaudeCode,
    /// Codex CLI sessions.
    Codex,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PricesArgs {
    #[command(subcommand)]
    pub action: Option<PricesAction>,
    /// The model to show the prices of (as events name it: claude-sonnet-4-5-20250929,
    /// openai/gpt-5, ...); without it, what the table is.
    pub model: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PricesAction {
    /// Replace the price table with LiteLLM's current data (kept in .git/tally/prices.json).
    Update {
        /// A file or an http(s) URL of LiteLLM's model_prices_and_context_window.json
        /// (default: LiteLLM's published copy).
        #[arg(long, value_name = "FILE|URL")]
        from: Option<String>,
    },
}
