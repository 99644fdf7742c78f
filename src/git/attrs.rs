//! The `tally-profile` attribute and `tally.profile` setting of a path, read in-process
//! with gix where it can stand in for git (the merge driver runs once per merged file, and
//! the two git processes this replaces were most of its fixed cost).

use super::cli::Git;
use std::path::Path;

/// The setting that picks the profile of `path` (its `tally-profile` attribute, else
/// `tally.profile`), in-process where `profile_setting` can, else from git.
pub fn profile_of(dir: &Path, path: Option<&str>) -> Option<String> {
    profile_setting(dir, path).unwrap_or_else(|| {
        let git = Git::new(dir);
        let from_attr = path.and_then(|p| git.check_attr("tally-profile", p).ok().flatten());
        from_attr.or_else(|| git.config_get("tally.profile").ok().flatten())
    })
}

/// The setting that picks the profile of `path`, read in-process with gix: its
/// `tally-profile` attribute, else `tally.profile` (`Some(None)` when neither is set). The
/// merge driver runs once per merged file, and the two git processes this replaces were
/// most of its fixed cost. `None` where gix cannot stand in for git — no work tree, a
/// repository gix cannot open, a relative `core.attributesFile`, or `git -c` setting a
/// `tally.` key (git hands those to the driver in GIT_CONFIG_PARAMETERS, which gix does not
/// read): ask git then.
pub fn profile_setting(dir: &Path, path: Option<&str>) -> Option<Option<String>> {
    if std::env::var("GIT_CONFIG_PARAMETERS").is_ok_and(|p| sets_tally_key(&p)) {
        return None;
    }
    let repo = gix::ThreadSafeRepository::discover_with_environment_overrides(dir).ok()?.to_thread_local();
    let top = std::fs::canonicalize(repo.workdir()?).ok()?;
    let config = repo.config_snapshot();
    if config.string("core.attributesFile").is_some_and(|f| !f.starts_with(b"/") && !f.starts_with(b"~")) {
        return None; // relative to git's working directory, which gix reads differently
    }
    if let Some(path) = path {
        if Path::new(path).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return None;
        }
        // Relative to `dir`, as `git -C dir check-attr` reads it (the driver runs at the top).
        let at = std::fs::canonicalize(dir).ok()?.join(path);
        let rel = at.strip_prefix(&top).ok()?;
        let index = repo.index_or_empty().ok()?;
        let source = gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping;
        let mut stack = repo.attributes_only(&index, source).ok()?;
        let mut found = stack.selected_attribute_matches(["tally-profile"]);
        stack.at_path(rel, None).ok()?.matching_attributes(&mut found);
        use gix::attrs::StateRef;
        let value = found.iter_selected().next().and_then(|m| match m.assignment.state {
            StateRef::Value(v) => Some(v.as_bstr().to_string()),
            StateRef::Set => Some("set".to_string()),
            StateRef::Unset | StateRef::Unspecified => None,
        });
        if value.is_some() {
            return Some(value);
        }
    }
    Some(config.string("tally.profile").map(|v| v.to_string()))
}

/// Whether git's `-c` settings, as passed to a child in GIT_CONFIG_PARAMETERS, set a key
/// of the `tally` section. Each key starts a single-quoted item: `'tally.profile'='x'`, or
/// `'tally.profile=x'` from older git. `merge.tally.*` (git-tally's own forced driver) is
/// not one.
fn sets_tally_key(parameters: &str) -> bool {
    parameters.to_ascii_lowercase().contains("'tally.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_tally_keys_in_git_config_parameters_count() {
        use super::sets_tally_key;
        // As git 2.47 passes `git -c merge.tally.driver=… -c Tally.Profile=generic`.
        assert!(!sets_tally_key(
            "'merge.tally.name'='git-tally: exact' 'merge.tally.driver'='git-tally merge %O %A %B'"
        ));
        assert!(sets_tally_key("'merge.tally.name'='x' 'Tally.Profile'='generic'"));
        assert!(sets_tally_key("'tally.profile=generic'"));
        assert!(!sets_tally_key("'core.attributesfile'='/x/tally.attrs'"));
    }
}
