//! `man`: one manual page, git-tally(1), with every command in it.
//!
//! git turns `git tally --help` into `man git-tally`, so this page is what a user sees
//! first. clap_mangen would render one line per subcommand pointing at pages such as
//! git-tally-sync(1) that nobody installs, and a synopsis that shows `-C` without its
//! value; so the page is assembled here from the same clap definitions, with each command's
//! usage, options and values in a COMMANDS section, and references only to pages that
//! exist wherever git and systemd do.

use crate::cli::Cli;
use clap::{Arg, Command};

/// Pages this one refers to (SEE ALSO): git's and systemd's own.
pub const SEE_ALSO: [(&str, u8); 6] =
    [("git", 1), ("git-config", 1), ("gitattributes", 5), ("githooks", 5), ("systemctl", 1), ("systemd.timer", 5)];

/// Text escaped for roff: backslashes, dashes (so they are not hyphens), and a leading
/// dot or quote that would start a request.
fn esc(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn bold(s: &str) -> String {
    format!("\\fB{}\\fR", esc(s))
}

fn italic(s: &str) -> String {
    format!("\\fI{}\\fR", esc(s))
}

/// Paragraphs of help text (blank lines separate them).
fn text(out: &mut String, s: &str) {
    for para in s.split("\n\n") {
        let joined: Vec<&str> = para.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if joined.is_empty() {
            continue;
        }
        out.push_str(&esc(&joined.join(" ")));
        out.push('\n');
        out.push_str(".PP\n");
    }
    if out.ends_with(".PP\n") {
        out.truncate(out.len() - ".PP\n".len());
    }
}

fn value_names(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names.iter().map(|n| italic(n)).collect::<Vec<_>>().join(" "),
        None => italic(arg.get_id().as_str()),
    }
}

/// The `.TP` entry of one option or argument.
fn option(out: &mut String, arg: &Arg) {
    let takes_value = arg.get_num_args().is_some_and(|r| r.takes_values()) || arg.is_positional();
    let mut head = Vec::new();
    if let Some(s) = arg.get_short() {
        head.push(bold(&format!("-{s}")));
    }
    if let Some(l) = arg.get_long() {
        head.push(bold(&format!("--{l}")));
    }
    let mut line = head.join(", ");
    if arg.is_positional() {
        line = value_names(arg);
        if arg.get_num_args().is_some_and(|r| r.max_values() > 1) {
            line.push_str("...");
        }
    } else if takes_value {
        line.push(' ');
        line.push_str(&value_names(arg));
    }
    out.push_str(".TP\n");
    out.push_str(&line);
    out.push('\n');
    let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
    text(out, &help);
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| match v.get_help() {
            Some(h) => format!("{}: {}", v.get_name(), h.to_string().trim_end_matches('.').to_lowercase()),
            None => v.get_name().to_string(),
        })
        .collect();
    if !values.is_empty() && takes_value {
        let sep = if values.iter().any(|v| v.contains(':')) { "; " } else { ", " };
        out.push_str(&esc(&format!("[possible values: {}]", values.join(sep))));
        out.push('\n');
    }
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if !defaults.is_empty() && takes_value {
        out.push_str(&esc(&format!("[default: {}]", defaults.join(", "))));
        out.push('\n');
    }
}

fn shown_args(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

/// One command (and its subcommands) under COMMANDS.
fn command(out: &mut String, path: &str, cmd: &Command) {
    // clap names the command `git-tally <sub>` in its usage line (set when it was built).
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim();
    let rest = usage.strip_prefix(&path.replacen("git tally", "git-tally", 1)).unwrap_or(usage);
    out.push_str(&format!(".SS \"{}\"\n", esc(path)));
    out.push_str(&format!("{}{}\n.PP\n", bold(path), esc(rest)));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        text(out, &about.to_string());
        out.push('\n');
    }
    let args = shown_args(cmd);
    if !args.is_empty() {
        out.push_str(".RS\n");
        for a in args {
            option(out, a);
        }
        out.push_str(".RE\n");
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        command(out, &format!("{path} {}", sub.get_name()), sub);
    }
}

/// The page, in roff.
pub fn render() -> String {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Building fills in what the page shows: the number of values each option takes, the
    // help and version flags.
    cmd.build();
    let version = cmd.get_version().unwrap_or("");
    let mut out = String::new();
    out.push_str(&format!(".TH GIT\\-TALLY 1 \"\" \"git\\-tally {}\" \"Git Manual\"\n", esc(version)));
    out.push_str(".SH NAME\n");
    out.push_str(&format!("git\\-tally \\- {}\n", esc(&cmd.get_about().map(|a| a.to_string()).unwrap_or_default())));
    out.push_str(".SH SYNOPSIS\n");
    for name in ["git tally", "git-tally"] {
        out.push_str(&format!(
            "{} [{} {}] [{} {}] {} [{}]\n.br\n",
            bold(name),
            bold("-C"),
            italic("path"),
            bold("--proxy-config"),
            italic("FILE"),
            italic("command"),
            italic("options")
        ));
    }
    out.push_str(".SH DESCRIPTION\n");
    text(&mut out, &cmd.get_long_about().map(|a| a.to_string()).unwrap_or_default());
    out.push('\n');
    out.push_str(".PP\n");
    text(
        &mut out,
        "As a git subcommand it runs as git tally; git tally --help shows this page. \
Exit status 3 means a transient failure (network, remote, busy lock): nothing was lost, run it again later.",
    );
    out.push('\n');
    out.push_str(".SH OPTIONS\n");
    for a in cmd.get_arguments().filter(|a| a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version")) {
        option(&mut out, a);
    }
    out.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        command(&mut out, &format!("git tally {}", sub.get_name()), sub);
    }
    out.push_str(".SH EXIT STATUS\n");
    for (code, meaning) in [
        ("0", "Success."),
        ("1", "A merge conflict, or a check that failed."),
        ("2", "A usage error, bad configuration (a missing \\-\\-proxy\\-config file, a tally.file outside the work tree or naming a directory), or an unsafe repository state."),
        ("3", "A transient failure (network, remote, lock busy): safe to retry, nothing lost."),
        (">128", "Only from the merge driver, on purpose: git then aborts the merge."),
    ] {
        out.push_str(&format!(".TP\n{}\n{}\n", bold(code), meaning));
    }
    out.push_str(".SH ENVIRONMENT\n");
    for (var, meaning) in [
        ("GIT_TALLY_TRACE", "1: print the ledger's decisions on stderr; an absolute path: append them to that file."),
        ("GIT_TALLY_MERGE", "0: the merge driver falls back to git's line merge."),
        ("NO_COLOR", "Set: reports use no colour."),
        ("XDG_CONFIG_HOME", "Where user systemd units go (default ~/.config): $XDG_CONFIG_HOME/systemd/user."),
    ] {
        out.push_str(&format!(".TP\n{}\n{}\n", bold(var), esc(meaning)));
    }
    out.push_str(".SH FILES\n");
    for (file, meaning) in [
        (".git/tally/", "The journal of recorded events and git\\-tally's own copy of the ledger."),
        (".gitattributes", "The merge=tally lines that git tally install writes."),
        (
            "~/.config/systemd/user/git\\-tally\\-*",
            "User units of git tally systemd install (/etc/systemd/system with \\-\\-system).",
        ),
    ] {
        out.push_str(&format!(".TP\n\\fB{file}\\fR\n{meaning}\n"));
    }
    out.push_str(".SH SEE ALSO\n");
    let refs: Vec<String> = SEE_ALSO.iter().map(|(n, s)| format!("{}({s})", bold(n))).collect();
    out.push_str(&refs.join(", "));
    out.push('\n');
    out
}
