//! `hooks install|uninstall|run`: git hooks that keep invalid usage files out of history
//! (SPEC §7). The scripts in `hooks/` are embedded; installing keeps any hook already in
//! place (renamed `<hook>.pre-git-tally`, run first by ours) and honours core.hooksPath.
//! Each script names this binary by its absolute path (git runs hooks with whatever PATH
//! its caller had: cron, systemd or an IDE lack `~/.cargo/bin`); installing again after
//! an upgrade or a move rewrites it.

use crate::cli::{HooksAction, HooksArgs};
use crate::config::Config;
use crate::engine;
use crate::error::{Error, Result};
use crate::exit;
use crate::git::Git;
use crate::json;
use crate::profile;
use std::collections::BTreeSet;
use std::path::Path;

const HOOKS: [(&str, &str); 4] = [
    ("pre-commit", include_str!("../../hooks/pre-commit")),
    ("post-merge", include_str!("../../hooks/post-merge")),
    ("post-rewrite", include_str!("../../hooks/post-rewrite")),
    ("pre-push", include_str!("../../hooks/pre-push")),
];
const MARK: &str = "# git-tally hook:";
/// The line of each script that names the binary; `install` puts the absolute path in.
const PROGRAM_LINE: &str = "\ngit_tally=git-tally\n";

/// The script of hook `name` as installed for the git-tally at `exe`.
fn script_for(script: &str, exe: &Path) -> String {
    let line = format!("\ngit_tally={}\n", crate::fsutil::shell_quote(&exe.to_string_lossy()));
    script.replacen(PROGRAM_LINE, &line, 1)
}

/// The git-tally an installed hook script runs (its `git_tally=` line), unquoted.
pub fn hook_program(script: &str) -> Option<String> {
    let line = script.lines().find_map(|l| l.strip_prefix("git_tally="))?;
    crate::fsutil::first_shell_word(line)
}

/// The names of the hooks git-tally installs.
pub fn hook_names() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|(n, _)| *n)
}

pub fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(MARK))
}

pub fn run(dir: &Path, args: &HooksArgs) -> Result<i32> {
    let git = Git::new(dir);
    match &args.action {
        HooksAction::Install => install(&git),
        HooksAction::Uninstall => uninstall(&git),
        HooksAction::Run { name, args } => run_hook(&git, name, args),
    }
}

fn install(git: &Git) -> Result<i32> {
    use std::os::unix::fs::PermissionsExt;
    let dir = git.hooks_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let exe = crate::fsutil::current_exe()?;
    for (name, script) in HOOKS {
        let script = script_for(script, &exe);
        let path = dir.join(name);
        let saved = dir.join(format!("{name}.pre-git-tally"));
        if path.exists() && !is_ours(&path) {
            if saved.exists() {
                return Err(Error::Usage(format!(
                    "{} and {} both exist; move one away first (nothing was changed for {name})",
                    path.display(),
                    saved.display()
                )));
            }
            std::fs::rename(&path, &saved).map_err(|e| Error::io(&path, e))?;
            println!("kept your {name} hook as {} (it runs first)", saved.display());
        }
        if std::fs::read(&path).ok().as_deref() != Some(script.as_bytes()) {
            crate::fsutil::write_atomic_mode(&path, script.as_bytes(), 0o777)?;
        }
        let mode = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.permissions().mode();
        if mode & 0o100 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o100))
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    println!(
        "installed pre-commit, post-merge, post-rewrite and pre-push in {} (they run {})",
        dir.display(),
        exe.display()
    );
    Ok(exit::OK)
}

fn uninstall(git: &Git) -> Result<i32> {
    let dir = git.hooks_dir()?;
    for (name, _) in HOOKS {
        let path = dir.join(name);
        if is_ours(&path) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        let saved = dir.join(format!("{name}.pre-git-tally"));
        if saved.exists() && !path.exists() {
            std::fs::rename(&saved, &path).map_err(|e| Error::io(&saved, e))?;
            println!("restored your {name} hook");
        }
    }
    println!("removed the git-tally hooks from {}", dir.display());
    Ok(exit::OK)
}

/// The usage files among `paths`: configured ones, ledger files, and those with
/// merge=tally.
fn usage_files(git: &Git, paths: &[String]) -> Result<Vec<String>> {
    let config = Config::load(git)?;
    let ledgers: Vec<String> =
        config.files.iter().map(|f| format!("{}/", crate::ledger::ledger_dir_of(&f.to_string_lossy()))).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    // One git process for every path (a merge's post-merge passes the whole tree).
    let merge = if refs.is_empty() { Vec::new() } else { git.check_attr_all("merge", &refs)? };
    let mut out: BTreeSet<String> = BTreeSet::new();
    for (p, m) in paths.iter().zip(merge) {
        if config.files.iter().any(|f| f.to_string_lossy() == *p)
            || ledgers.iter().any(|l| p.starts_with(l.as_str()))
            || m.as_deref() == Some("tally")
        {
            out.insert(p.clone());
        }
    }
    Ok(out.into_iter().collect())
}

/// Problems of a usage file's bytes, as "JSON path: message" lines.
fn problems(bytes: &[u8]) -> Vec<String> {
    match json::parse(bytes) {
        Err(p) => vec![p.to_string()],
        Ok(doc) if crate::ledger::shard::is_ledger_file(&doc) => match crate::ledger::LedgerFile::from_value(&doc) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        },
        Ok(doc) => {
            let p = profile::detect(&[Some(&doc)]);
            match engine::check(p, &doc) {
                Ok(findings) => findings.into_iter().map(|f| format!("{}: {}", f.path, f.message)).collect(),
                Err(e) => vec![e.to_string().trim_start_matches("ours: ").to_string()],
            }
        }
    }
}

fn run_hook(git: &Git, name: &str, args: &[String]) -> Result<i32> {
    match name {
        "pre-commit" => pre_commit(git),
        "post-merge" | "post-rewrite" => {
            post_merge(git, name);
            Ok(exit::OK)
        }
        "pre-push" => pre_push(git),
        other => Err(Error::Usage(format!("unknown hook {other:?} (args {args:?})"))),
    }
}

fn pre_commit(git: &Git) -> Result<i32> {
    let staged = git.staged_paths()?;
    let mut failed = false;
    for path in usage_files(git, &staged)? {
        let bytes = git.staged_blob(&path)?;
        let found = problems(&bytes);
        if !found.is_empty() {
            failed = true;
            for p in found {
                eprintln!("pre-commit: {path}: {p}");
            }
            continue;
        }
        ingest_if_records_lost(git, &path, &bytes)?;
    }
    if failed {
        eprintln!("pre-commit: refusing to commit invalid usage files; fix them (git tally check) and commit again");
        return Ok(exit::CONFLICT);
    }
    Ok(exit::OK)
}

/// A staged usage file that lost records since HEAD is a stale application write: ingest
/// it into HEAD's version (records added, none deleted) and stage that instead.
fn ingest_if_records_lost(git: &Git, path: &str, staged: &[u8]) -> Result<()> {
    let Some(head) = git.blob("HEAD", path)? else { return Ok(()) };
    let (Ok(head_doc), Ok(staged_doc)) = (json::parse(&head), json::parse(staged)) else { return Ok(()) };
    let p = profile::detect(&[Some(&head_doc)]);
    let (Ok(before), Ok(after)) = (engine::record_ids(p, &head_doc), engine::record_ids(p, &staged_doc)) else {
        return Ok(());
    };
    let lost = before.difference(&after).count();
    if lost == 0 {
        return Ok(());
    }
    let (merged, _) = crate::merge::ingest_bytes(None, &head, staged)
        .map_err(|e| Error::Failed(format!("pre-commit: {path}: cannot ingest the staged write: {e}")))?;
    git.stage(path, &merged)?;
    let file = git.toplevel()?.join(path);
    if std::fs::read(&file).ok().as_deref() == Some(staged) {
        crate::fsutil::write_atomic(&file, &merged)?;
    }
    eprintln!(
        "pre-commit: {path} lost {lost} record(s) since HEAD (a stale application write?); staged it ingested instead: its new records added, none deleted"
    );
    Ok(())
}

fn post_merge(git: &Git, name: &str) {
    let Ok(paths) = paths_at(git, "HEAD") else { return };
    let Ok(usage) = usage_files(git, &paths) else { return };
    for path in &usage {
        let Ok(Some(now)) = git.blob("HEAD", path) else { continue };
        let found = problems(&now);
        if !found.is_empty() {
            eprintln!("git-tally ({name}): {path} is not a valid usage file now: {}", found.join("; "));
        }
    }
    // What came in: each usage file's totals, as the ledger makes them, before and after.
    let Ok(sync) = crate::sync::Sync::open(git.dir(), |_| Ok(())) else { return };
    let at = |rev: &str, stream: &crate::ledger::Stream| -> Option<(u64, u64)> {
        let commit = sync.repo.rev_parse(rev)?;
        let tree = sync.repo.tree_of(commit).ok()?;
        let view = sync.ledger.view_at(stream, &crate::sync::TreeSource { repo: &sync.repo, tree: Some(tree) }).ok()?;
        profile::summary(view.profile, &view.doc)
    };
    for stream in sync.ledger.streams() {
        match (at("ORIG_HEAD", stream), at("HEAD", stream)) {
            (Some((r0, t0)), Some((r1, t1))) if (r0, t0) != (r1, t1) => println!(
                "git-tally: {}: {:+} requests, {:+} tokens from the {} (now {r1} requests)",
                stream.file,
                r1 as i128 - r0 as i128,
                t1 as i128 - t0 as i128,
                if name == "post-merge" { "merge" } else { "rewrite" }
            ),
            (_, Some((r1, _))) => println!("git-tally: {}: {r1} requests", stream.file),
            _ => {}
        }
    }
}

/// Every file in the tree of `rev`, read in-process.
fn paths_at(git: &Git, rev: &str) -> Result<Vec<String>> {
    let repo = crate::git::Repo::open(git.dir()).map_err(|e| Error::Failed(e.to_string()))?;
    repo.paths_at(rev).map_err(|e| Error::Failed(e.to_string()))
}

fn pre_push(git: &Git) -> Result<i32> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).map_err(|e| Error::io("stdin", e))?;
    let mut failed = false;
    for line in input.lines() {
        let Some(sha) = line.split_whitespace().nth(1) else { continue };
        if sha.chars().all(|c| c == '0') {
            continue;
        }
        let paths = paths_at(git, sha)?;
        for path in usage_files(git, &paths)? {
            let Some(bytes) = git.blob(sha, &path)? else { continue };
            for p in problems(&bytes) {
                failed = true;
                eprintln!("pre-push: {path} at {}: {p}", &sha[..sha.len().min(12)]);
            }
        }
    }
    if failed {
        eprintln!("pre-push: refusing to push invalid usage files");
        return Ok(exit::CONFLICT);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_names_its_program_on_one_line() {
        for (name, script) in HOOKS {
            assert_eq!(script.matches(PROGRAM_LINE).count(), 1, "{name}");
            let exe = Path::new("/opt/my tools/git-tally");
            let installed = script_for(script, exe);
            assert_eq!(hook_program(&installed).as_deref(), Some("/opt/my tools/git-tally"), "{name}");
            assert!(installed.contains(MARK));
        }
    }
}
