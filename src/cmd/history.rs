//! `history`, `restore`, `diff`: the commits that changed a usage file's ledger are its
//! backups. Each version is the view the ledger at that commit makes.

use crate::cli::{DiffArgs, HistoryArgs, RestoreArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::git::{Oid, Repo};
use crate::json;
use crate::ledger::{render_view, Stream};
use crate::profile;
use crate::sync::{Sync, TreeSource};
use std::path::{Component, Path, PathBuf};

fn summary(doc: &serde_json::Value, p: &'static profile::Profile) -> Option<(u64, u64)> {
    profile::summary(p, doc)
}

/// The stream of `file` (default: the first).
fn stream<'s>(s: &'s Sync, file: Option<&Path>) -> Result<&'s Stream> {
    let streams = s.ledger.streams();
    match file {
        None => streams.first().ok_or_else(|| Error::Usage("no usage file is configured".into())),
        Some(f) => {
            let rel = f.strip_prefix(s.repo.top()).unwrap_or(f).to_string_lossy().into_owned();
            streams.iter().find(|st| st.file == rel).ok_or_else(|| {
                Error::Usage(format!(
                    "{rel} is not a configured usage file ({})",
                    streams.iter().map(|st| st.file.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
        }
    }
}

/// The view of `stream` at a commit.
fn view_at(s: &Sync, stream: &Stream, commit: Oid) -> Result<crate::ledger::ViewDoc> {
    let tree = s.repo.tree_of(commit).map_err(|e| Error::Failed(e.to_string()))?;
    s.ledger.view_at(stream, &TreeSource { repo: &s.repo, tree: Some(tree) })
}

fn head(repo: &Repo) -> Result<Oid> {
    repo.head()
        .map_err(|e| Error::Usage(e.to_string()))?
        .commit
        .ok_or_else(|| Error::Usage("the branch has no commits yet".into()))
}

pub fn history(s: &Sync, args: &HistoryArgs) -> Result<i32> {
    let stream = stream(s, args.file.as_deref())?;
    let dir = stream.ledger_dir();
    println!("{:<9} {:<25} {:<22} {:>9} {:>12}  message", "commit", "date", "author", "requests", "tokens");
    let mut shown = 0;
    let commits = s.repo.first_parents(head(&s.repo)?, usize::MAX).map_err(|e| Error::Failed(e.to_string()))?;
    for c in commits {
        if shown >= args.limit {
            break;
        }
        let sub = |t: Oid| s.repo.entry(t, &dir).ok().flatten().map(|(id, _)| id);
        let parent = c.parents.first().copied();
        let before = parent.and_then(|p| s.repo.tree_of(p).ok()).and_then(sub);
        if sub(c.tree) == before {
            continue;
        }
        shown += 1;
        let now = view_at(s, stream, c.id)?;
        let then = match parent {
            Some(p) => summary(&view_at(s, stream, p)?.doc, stream.profile),
            None => None,
        };
        let (dr, dt) = match (summary(&now.doc, stream.profile), then) {
            (Some((r1, t1)), Some((r0, t0))) => {
                (format!("{:+}", r1 as i128 - r0 as i128), format!("{:+}", t1 as i128 - t0 as i128))
            }
            (Some((r1, t1)), None) => (format!("+{r1}"), format!("+{t1}")),
            _ => ("?".into(), "?".into()),
        };
        let date = chrono::DateTime::from_timestamp(c.author.time.seconds, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let subject = c.message.lines().next().unwrap_or("");
        println!(
            "{:<9} {date:<25} {:<22} {dr:>9} {dt:>12}  {subject}",
            &c.id.to_string()[..7],
            c.author.name.to_string()
        );
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

/// Whether the directories `target` would be written in, symbolic links followed, are
/// inside the work tree `top` and not in the git directory (`link/x.json`, where `link`
/// points elsewhere, is not inside).
fn resolves_inside(target: &Path, top: &Path, git_dir: &Path) -> bool {
    let Some(dir) = target.parent() else { return false };
    let dir = crate::config::canonical_ancestor(dir);
    match (std::fs::canonicalize(top), std::fs::canonicalize(git_dir)) {
        (Ok(top), Ok(git)) => dir.starts_with(&top) && !dir.starts_with(&git),
        _ => false,
    }
}

/// A revision, else a date (`2026-11-01`, `3 days ago`): the last commit before it.
fn resolve(repo: &Repo, at: &str) -> Result<Oid> {
    if let Some(c) = repo.rev_parse(at) {
        return Ok(c);
    }
    let when = parse_when(at, chrono::Utc::now())
        .ok_or_else(|| Error::Usage(format!("{at:?} is neither a revision nor a date (e.g. HEAD~3, 2026-11-01, 2026-11-01T12:00:00Z, \"3 days ago\", 2d)")))?;
    for c in repo.first_parents(head(repo)?, usize::MAX).map_err(|e| Error::Failed(e.to_string()))? {
        if repo.commit_time(c.id).map_err(|e| Error::Failed(e.to_string()))? <= when {
            return Ok(c.id);
        }
    }
    Err(Error::Usage(format!("no commit is as old as {at:?}")))
}

/// A date as seconds since the epoch: `YYYY-MM-DD` (its end, UTC), RFC 3339, "3 days ago",
/// or a duration ago (`2d`, `12h`).
fn parse_when(at: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(at, "%Y-%m-%d") {
        return Some(d.and_hms_opt(23, 59, 59)?.and_utc().timestamp());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
        return Some(t.timestamp());
    }
    let ago = at.strip_suffix(" ago").unwrap_or(at);
    let d = humantime::parse_duration(ago).ok()?;
    now.timestamp().checked_sub(i64::try_from(d.as_secs()).ok()?)
}

pub fn restore(s: &Sync, args: &RestoreArgs) -> Result<i32> {
    let stream = stream(s, args.file.as_deref())?;
    let rev = resolve(&s.repo, &args.at)?;
    let view = view_at(s, stream, rev)?;
    let top = s.repo.top().to_path_buf();
    let target = normalise(&top, args.to.as_deref().unwrap_or(Path::new(&stream.file)));
    if !target.starts_with(&top)
        || target == top
        || target.starts_with(s.repo.git_dir())
        || !resolves_inside(&target, &top, s.repo.git_dir())
    {
        return Err(Error::Usage(format!(
            "refusing to write {}: outside the repository {}",
            target.display(),
            top.display()
        )));
    }
    if target.exists() && !args.force {
        return Err(Error::Usage(format!("{} exists; add --force to overwrite it", target.display())));
    }
    let bytes = render_view(&view, None);
    let in_place = target == top.join(&stream.file);
    if in_place {
        // The usage file is a view of the ledger: the snapshot is written as git-tally's own
        // write (never ingested as new traffic), and the next sync writes the ledger's view.
        s.ledger.write_snapshot(stream, &bytes)?;
    } else {
        crate::ledger::replace_file(&target, &bytes, &s.ledger.state().tmp_ensured()?)?;
    }
    println!(
        "restored {} as of {} into {}{}",
        stream.file,
        &rev.to_string()[..12],
        target.display(),
        if in_place { " (a snapshot: the ledger is unchanged, and the next sync writes its view again)" } else { "" }
    );
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

pub fn diff(s: &Sync, args: &DiffArgs) -> Result<i32> {
    let stream = stream(s, args.file.as_deref())?;
    let from = resolve(&s.repo, &args.from)?;
    let old = view_at(s, stream, from)?;
    let (new, to) = match &args.to {
        Some(r) => (view_at(s, stream, resolve(&s.repo, r)?)?, r.clone()),
        None => {
            let head = s.repo.head().ok().and_then(|h| h.commit);
            let tree = head.and_then(|h| s.repo.tree_of(h).ok());
            (s.ledger.view(stream, &TreeSource { repo: &s.repo, tree }, true)?, "now".into())
        }
    };
    let path = &stream.file;
    match (summary(&old.doc, stream.profile), summary(&new.doc, stream.profile)) {
        (Some((r0, t0)), Some((r1, t1))) => println!(
            "{path}: {:+} requests, {:+} tokens from {} to {to} ({r0} -> {r1} requests)",
            r1 as i128 - r0 as i128,
            t1 as i128 - t0 as i128,
            args.from
        ),
        _ => println!("{path}: from {} to {to}", args.from),
    }
    let (a, b) = (canonical_text(&render_view(&old, None)), canonical_text(&render_view(&new, None)));
    let text = similar::TextDiff::from_lines(&a, &b);
    print!(
        "{}",
        text.unified_diff().context_radius(2).header(&format!("{path} at {}", args.from), &format!("{path} at {to}"))
    );
    Ok(exit::OK)
}
