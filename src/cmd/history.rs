//! `history` and `restore`: the commits that changed a usage file are its backups.

use crate::cli::{DiffArgs, HistoryArgs, RestoreArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::json;
use crate::profile;
use crate::store::Store;
use std::path::{Component, Path, PathBuf};

fn summary(bytes: Option<&[u8]>) -> Option<(u64, u64)> {
    let doc = json::parse(bytes?).ok()?;
    profile::summary(profile::detect(&[Some(&doc)]), &doc)
}

pub fn history(store: &Store, args: &HistoryArgs) -> Result<i32> {
    let git = store.git_handle().ok_or_else(|| Error::Usage("history needs git (tally.enabled is false)".into()))?;
    let rel = store.rel(args.file.as_deref());
    let path = rel.to_string_lossy();
    let limit = format!("-{}", args.limit);
    let log = git.run(&["log", &limit, "--format=%H%x1f%h%x1f%an%x1f%aI%x1f%s", "--", &path])?;
    println!("{:<9} {:<25} {:<22} {:>9} {:>12}  message", "commit", "date", "author", "requests", "tokens");
    for line in log.lines() {
        let f: Vec<&str> = line.split('\x1f').collect();
        let [full, short, author, date, subject] = f[..] else { continue };
        let now = summary(git.blob(full, &path)?.as_deref());
        let before = summary(git.blob(&format!("{full}^"), &path).ok().flatten().as_deref());
        let (dr, dt) = match (now, before) {
            (Some((r1, t1)), Some((r0, t0))) => {
                (format!("{:+}", r1 as i128 - r0 as i128), format!("{:+}", t1 as i128 - t0 as i128))
            }
            (Some((r1, t1)), None) => (format!("+{r1}"), format!("+{t1}")),
            _ => ("?".into(), "?".into()),
        };
        println!("{short:<9} {:<25} {:<22} {dr:>9} {dt:>12}  {subject}", &date[..date.len().min(25)], author);
    }
    Ok(exit::OK)
}

/// `p` made absolute against `top` and normalised, without touching the file system.
fn normalise(top: &Path, p: &Path) -> PathBuf {
    let mut out = if p.is_absolute() { PathBuf::new() } else { top.to_path_buf() };
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

pub fn restore(store: &Store, args: &RestoreArgs) -> Result<i32> {
    let git = store.git_handle().ok_or_else(|| Error::Usage("restore needs git (tally.enabled is false)".into()))?;
    let rel = store.rel(args.file.as_deref());
    let path = rel.to_string_lossy().into_owned();
    // A revision, else a date: the last commit before it.
    let rev = match git.run_optional(&["rev-parse", "-q", "--verify", &format!("{}^{{commit}}", args.at)])? {
        Some(r) => r,
        None => {
            let before = format!("--before={}", args.at);
            let r = git.run(&["rev-list", "-1", &before, "HEAD", "--", &path])?;
            if r.is_empty() {
                return Err(Error::Usage(format!(
                    "{:?} is neither a revision nor a date with a version of {path}",
                    args.at
                )));
            }
            r
        }
    };
    let bytes = git
        .blob(&rev, &path)?
        .ok_or_else(|| Error::Usage(format!("{path} does not exist at {}", &rev[..12.min(rev.len())])))?;
    let top = std::fs::canonicalize(store.top()).map_err(|e| Error::io(store.top(), e))?;
    let target = normalise(&top, args.to.as_deref().unwrap_or(&rel));
    if !target.starts_with(&top) || target == top {
        return Err(Error::Usage(format!(
            "refusing to write {}: outside the repository {}",
            target.display(),
            top.display()
        )));
    }
    if target.exists() && !args.force {
        return Err(Error::Usage(format!("{} exists; add --force to overwrite it", target.display())));
    }
    let target_rel = target.strip_prefix(&top).expect("checked").to_path_buf();
    if store.config().files.contains(&target_rel) {
        store.replace(&target_rel, &bytes)?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        crate::fsutil::write_atomic(&target, &bytes)?;
    }
    println!("restored {path} as of {} into {}", &rev[..12.min(rev.len())], target.display());
    Ok(exit::OK)
}

/// Canonical text: sorted keys, two-space indent — stable lines for diffs.
fn canonical_text(bytes: &[u8]) -> String {
    match json::parse(bytes) {
        Ok(v) => {
            let sorted: serde_json::Value = serde_json::from_str(&json::canonical(&v)).expect("canonical JSON parses");
            serde_json::to_string_pretty(&sorted).expect("serialises") + "\n"
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub fn show(path: &Path) -> Result<i32> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    print!("{}", canonical_text(&bytes));
    Ok(exit::OK)
}

pub fn diff(store: &Store, args: &DiffArgs) -> Result<i32> {
    let git = store.git_handle().ok_or_else(|| Error::Usage("diff needs git (tally.enabled is false)".into()))?;
    let rel = store.rel(args.file.as_deref());
    let path = rel.to_string_lossy().into_owned();
    let old = git.blob(&args.from, &path)?.unwrap_or_default();
    let (new, to) = match &args.to {
        Some(r) => (git.blob(r, &path)?.unwrap_or_default(), r.clone()),
        None => (std::fs::read(store.top().join(&rel)).unwrap_or_default(), "the work tree".into()),
    };
    match (summary(Some(&old)), summary(Some(&new))) {
        (Some((r0, t0)), Some((r1, t1))) => println!(
            "{path}: {:+} requests, {:+} tokens from {} to {to} ({r0} -> {r1} requests)",
            r1 as i128 - r0 as i128,
            t1 as i128 - t0 as i128,
            args.from
        ),
        _ => println!("{path}: from {} to {to}", args.from),
    }
    let (a, b) = (canonical_text(&old), canonical_text(&new));
    let text = similar::TextDiff::from_lines(&a, &b);
    print!(
        "{}",
        text.unified_diff().context_radius(2).header(&format!("{path} at {}", args.from), &format!("{path} at {to}"))
    );
    Ok(exit::OK)
}
