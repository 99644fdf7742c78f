//! `history` and `restore`: the commits that changed a usage file are its backups.

use crate::cli::{HistoryArgs, RestoreArgs};
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
