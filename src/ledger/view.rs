//! Views (SPEC §4b.5): a usage file in its application's format, materialised from every
//! device's ledger files — records placed where the format keeps them, counters summed,
//! resets and cleared histories applied — and written back where the application reads
//! it, never over a write of the application's that git-tally has not ingested yet.

use super::algebra::{self, Op};
use super::shard::{counter_rules, Floor, LedgerFile, Shard};
use super::{by_device, Ledger, Source, Stream};
use crate::error::{Error, Result};
use crate::json::{canonical, Layout};
use crate::num::Num;
use crate::profile::{self, Kind, Profile};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

/// What writing a view did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The view is in the file.
    Written,
    /// The application wrote the file since git-tally last wrote or ingested it: left for
    /// the next ingestion.
    Left,
    /// The application wrote the file while the view was being put in place: its write
    /// was put back, for the next ingestion.
    PutBack,
}

/// A view as a document, with what its counters hold beyond its records' contributions
/// (the base an application that re-reads the file starts from).
#[derive(Clone, Debug)]
pub struct ViewDoc {
    pub profile: &'static Profile,
    pub doc: Value,
    pub residual: Value,
}

/// Everything one device contributes to a stream.
#[derive(Default)]
pub(crate) struct DeviceData {
    pub name: Option<String>,
    pub shards: Vec<Shard>,
    pub residual: Option<Value>,
    pub floors: Vec<(String, Floor)>,
}

impl Ledger {
    /// Every device's data for a stream: this device's own (with the unfolded journal when
    /// `with_journal`), the others' from `source`. A file of another device that cannot
    /// be read is skipped with a warning (it stays in git; its device rewrites it).
    pub(crate) fn devices(
        &self,
        stream: &Stream,
        source: &dyn Source,
        with_journal: bool,
    ) -> Result<BTreeMap<String, DeviceData>> {
        let source = super::legacy::WithCarried { source, ledger: self };
        let mut out = from_source(stream, &source, Some(&self.key))?;

        let own = out.entry(self.key.clone()).or_default();
        own.name = Some(self.config.device.clone());
        own.shards = if with_journal {
            self.own_shards_with_journal(stream)?
        } else {
            self.own_days(stream)?.iter().map(|d| self.own_shard(stream, d)).collect::<Result<_>>()?
        };
        let residual = self.own_residual(stream)?;
        own.residual = Some(residual.counters);
        if let Some(f) = self.own_floors(stream)? {
            own.floors.extend(f.floors);
        }
        Ok(out)
    }

    /// The stream's usage file as it was in a commit (`source`: its tree), every device's
    /// files — this one's too — read from there.
    pub fn view_at(&self, stream: &Stream, source: &dyn Source) -> Result<ViewDoc> {
        let mut devices = from_source(stream, source, None)?;
        if let Some(own) = devices.get_mut(&self.key) {
            own.name = Some(self.config.device.clone());
        }
        build(stream.profile, devices).map_err(|e| Error::Failed(format!("{}: {e}", stream.file)))
    }

    /// The stream's usage file as every device's ledger makes it.
    pub fn view(&self, stream: &Stream, source: &dyn Source, with_journal: bool) -> Result<ViewDoc> {
        let devices = self.devices(stream, source, with_journal)?;
        build(stream.profile, devices).map_err(|e| Error::Failed(format!("{}: {e}", stream.file)))
    }

    /// Writes a view to the stream's file, atomically (the temporary file under
    /// `.git/tally/tmp`), unless the application wrote the file since git-tally last wrote
    /// or ingested it (that write is ingested next time). An application write that lands
    /// during the rename is put back. `reread`: the application re-reads the file now
    /// (`tally.appReads = after-pull`), so it is the base of its next write. Returns whether
    /// the view is in place.
    pub fn write_view(&self, stream: &Stream, view: &ViewDoc, reread: bool) -> Result<Written> {
        let path = self.top.join(&stream.file);
        let existing = std::fs::read(&path).ok();
        let bytes = render(view, existing.as_deref());
        let written = hash(&bytes);
        let mut residual = self.own_residual(stream)?;
        let local = residual.local.as_object().cloned().unwrap_or_default();
        let known = |h: &str| KNOWN.iter().any(|k| local.get(*k).and_then(Value::as_str) == Some(h));
        let mut held = std::fs::File::open(&path).ok();
        let current = held.as_mut().and_then(|f| {
            let mut b = Vec::new();
            f.read_to_end(&mut b).ok().map(|_| b)
        });
        // No application writes the native format (nothing ingests it): a file there that
        // git-tally does not know of — a copied clone's, the original's view — is replaced.
        let app_format = stream.profile.name != "tally";
        if let Some(c) = &current {
            if c != &bytes && !known(&hash(c)) && app_format {
                return Ok(Written::Left);
            }
        }
        let mut local = local;
        let replacing = current.as_deref() != Some(&bytes[..]);
        if reread || replacing {
            if reread {
                local.insert("read_pending".into(), view.residual.clone());
            }
            // Known before it is in place: killed between the rename and the bookkeeping
            // after it, the next run must not take the view for the application's write.
            local.insert("writing".into(), json!(written));
            residual.local = Value::Object(local.clone());
            self.write_own_local(stream, &[("residual.json".into(), LedgerFile::Residual(residual.clone()))])?;
        }
        let kept = if replacing {
            self.state.ensure(&self.state.tmp())?;
            write_back(&path, &bytes, held.zip(current), &self.state.tmp())?
        } else {
            true
        };
        local.insert("written".into(), json!(written));
        local.remove("writing");
        if kept && reread {
            local.insert("read".into(), view.residual.clone());
            local.remove("read_pending");
            local.remove("wrote_since_read");
        }
        residual.local = Value::Object(local);
        self.write_own_local(stream, &[("residual.json".into(), LedgerFile::Residual(residual))])?;
        Ok(if kept { Written::Written } else { Written::PutBack })
    }
}

impl Ledger {
    /// Writes bytes to the stream's file as git-tally's own write (a restored snapshot):
    /// never ingested as the application's.
    pub fn write_snapshot(&self, stream: &Stream, bytes: &[u8]) -> Result<()> {
        replace(&self.top.join(&stream.file), bytes, &self.state.tmp_ensured()?)?;
        self.mark_written(stream, bytes)
    }

    /// Takes `bytes` in the stream's file for git-tally's own: never ingested as an
    /// application's write.
    pub(crate) fn mark_written(&self, stream: &Stream, bytes: &[u8]) -> Result<()> {
        let mut residual = self.own_residual(stream)?;
        let mut local = residual.local.as_object().cloned().unwrap_or_default();
        local.insert("written".into(), json!(hash(bytes)));
        residual.local = Value::Object(local);
        self.write_own_local(stream, &[("residual.json".into(), LedgerFile::Residual(residual))])
    }
}

/// Every device's files in `source` (but `skip`'s). A file that cannot be read is
/// skipped with a warning (it stays in git; its device rewrites it).
fn from_source(stream: &Stream, source: &dyn Source, skip: Option<&str>) -> Result<BTreeMap<String, DeviceData>> {
    let mut out: BTreeMap<String, DeviceData> = BTreeMap::new();
    for (dev, files) in by_device(source.files(&stream.ledger_dir())?) {
        if Some(dev.as_str()) == skip {
            continue;
        }
        let data = out.entry(dev.clone()).or_default();
        for (path, bytes) in files {
            match LedgerFile::parse(&bytes) {
                Ok(LedgerFile::Shard(s)) => data.shards.push(s),
                Ok(LedgerFile::Residual(r)) => data.residual = Some(r.counters),
                Ok(LedgerFile::Device(d)) => data.name = Some(d.name),
                Ok(LedgerFile::Floors(f)) => data.floors.extend(f.floors),
                Err(e) => eprintln!(
                    "git-tally: warning: {}/{dev}/{path}: {e}; skipped (its device rewrites it)",
                    stream.ledger_dir()
                ),
            }
        }
    }
    Ok(out)
}

/// The bookkeeping entries holding hashes of files git-tally wrote (or is writing) or
/// ingested: a file with one of these hashes is not a new application write.
pub(crate) const KNOWN: [&str; 3] = ["written", "writing", "ingested"];

/// FNV-1a of bytes, as text: recognises files git-tally wrote.
pub(crate) fn hash(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}{:x}", bytes.len())
}

/// Replaces `path` with `bytes` through a temporary file in `tmp` (never in the work
/// tree), fsynced; a new file gets the umask's mode, an existing one keeps its mode.
pub fn replace(path: &Path, bytes: &[u8], tmp: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let t = temporary(path, bytes, tmp)?;
    match std::fs::rename(&t, path) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            // Another file system (EXDEV): write in place.
            let _ = std::fs::remove_file(&t);
            std::fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
        }
        Err(e) => {
            let _ = std::fs::remove_file(&t);
            return Err(Error::io(path, e));
        }
    }
    if let Some(d) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Puts `bytes` at `path` after `checked` — the file that was there, held open, and what
/// it held — was found safe to replace. An application may write between the check and
/// the replacement: in place (into the checked file) or by renaming a new file over it.
/// Its write, not ours, is then the newest: it is put back for the next run to ingest.
/// Returns whether `bytes` stayed.
pub(crate) fn write_back(
    path: &Path,
    bytes: &[u8],
    checked: Option<(std::fs::File, Vec<u8>)>,
    tmp: &Path,
) -> Result<bool> {
    let Some((old, seen)) = checked else {
        replace(path, bytes, tmp)?;
        return Ok(true);
    };
    match exchange_back(path, bytes, &old, &seen, tmp)? {
        Some(kept) => Ok(kept),
        None => write_back_by_rename(path, bytes, old, seen, tmp),
    }
}

/// The write-back by exchange (Linux's `renameat2(RENAME_EXCHANGE)`): our file and the
/// one at `path` swap names in one step, so the file displaced is exactly what was there
/// at that instant — the checked file as it was, or an application's write, which goes
/// back by a second exchange. `None` where the file system cannot exchange.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange_back(path: &Path, bytes: &[u8], old: &std::fs::File, seen: &[u8], tmp: &Path) -> Result<Option<bool>> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use std::os::unix::fs::MetadataExt;
    let ours = temporary(path, bytes, tmp)?;
    let exchange = |a: &Path, b: &Path| renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE);
    match exchange(&ours, path) {
        Ok(()) => {}
        Err(e) if [rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::XDEV].contains(&e) => {
            let _ = std::fs::remove_file(&ours);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&ours);
            return Err(Error::io(path, std::io::Error::from(e)));
        }
    }
    // `ours` now names what was at `path`.
    let ino = |m: std::io::Result<std::fs::Metadata>| m.map(|m| m.ino()).ok();
    let unchanged = ino(old.metadata()) == ino(std::fs::metadata(&ours))
        && std::fs::read(&ours).map_err(|e| Error::io(&ours, e))? == seen;
    let kept = if unchanged {
        true
    } else {
        // The application's write goes back in place (the very file, so a writer still
        // writing into it goes on writing where the application reads).
        exchange(&ours, path).map_err(|e| Error::io(path, std::io::Error::from(e)))?;
        if std::fs::read(&ours).map_err(|e| Error::io(&ours, e))? != bytes {
            // An even newer write landed between the two exchanges: it is the newest.
            std::fs::rename(&ours, path).map_err(|e| Error::io(path, e))?;
        }
        false
    };
    let _ = std::fs::remove_file(&ours);
    if let Some(d) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
        let _ = d.sync_all();
    }
    Ok(Some(kept))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange_back(_: &Path, _: &[u8], _: &std::fs::File, _: &[u8], _: &Path) -> Result<Option<bool>> {
    Ok(None)
}

/// `bytes` in a new temporary file in `tmp` (never in the work tree), fsynced, with the
/// mode of the file at `path` if there is one.
fn temporary(path: &Path, bytes: &[u8], tmp: &Path) -> Result<std::path::PathBuf> {
    use std::io::Write;
    let t = tmp.join(format!("view-{}-{}", std::process::id(), super::device::new_key()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&t).map_err(|e| Error::io(&t, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&t, e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&t, meta.permissions());
    }
    Ok(t)
}

/// The write-back where files cannot be exchanged: a rename, then the checked file read
/// again through the handle held on it. This sees a write made in place, not one renamed
/// over the file in the moment before the rename.
fn write_back_by_rename(path: &Path, bytes: &[u8], mut old: std::fs::File, seen: Vec<u8>, tmp: &Path) -> Result<bool> {
    replace(path, bytes, tmp)?;
    let mut read_old = || -> Option<Vec<u8>> {
        let mut now = Vec::new();
        old.rewind().ok()?;
        old.read_to_end(&mut now).ok()?;
        Some(now)
    };
    let Some(now) = read_old() else { return Ok(true) };
    if now == seen {
        return Ok(true);
    }
    let now = if crate::json::parse(&now).is_ok() {
        now
    } else {
        std::thread::sleep(std::time::Duration::from_millis(50));
        read_old().unwrap_or_default()
    };
    if crate::json::parse(&now).is_err() {
        return Ok(true);
    }
    replace(path, &now, tmp)?;
    Ok(false)
}

/// A view's bytes, laid out like the file there (CLIProxyAPI: an export envelope stays one).
pub fn render(view: &ViewDoc, existing: Option<&[u8]>) -> Vec<u8> {
    let layout = existing.map(Layout::detect).unwrap_or_default();
    if let (Some((key, is_env)), Some(bytes)) = (view.profile.envelope, existing) {
        // Whether the file there is an envelope is told from its outline: the file is the
        // previous view, as large as the history, and only its shape matters.
        if crate::json::outline(bytes, 1 << 16, 2).is_some_and(|o| is_env(&o)) {
            if let Some(members) = crate::json::parse(bytes).ok().and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            }) {
                return layout.write(&Enveloped { members: &members, key, doc: &view.doc });
            }
        }
    }
    layout.write(&view.doc)
}

/// An export envelope's members with the document in place of its `key`'s.
struct Enveloped<'a> {
    members: &'a Map<String, Value>,
    key: &'a str,
    doc: &'a Value,
}

impl serde::Serialize for Enveloped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.members.len()))?;
        for (k, v) in self.members {
            m.serialize_entry(k, if k == self.key { self.doc } else { v })?;
        }
        m.end()
    }
}

/// A record to place in a view: its time, identity and body.
type Placed = (Option<profile::Instant>, String, Value);

/// What a device's counters show after its floor: `counters − floor`.
fn above(profile: &'static Profile, counters: &Value, floor: Option<&Value>) -> std::result::Result<Value, String> {
    match floor {
        Some(f) => algebra::combine(counter_rules(profile), Op::Sub, counters, f).map_err(|e| e.to_string()),
        None => Ok(counters.clone()),
    }
}

/// The view of every device's data.
pub(crate) fn build(
    profile: &'static Profile,
    devices: BTreeMap<String, DeviceData>,
) -> std::result::Result<ViewDoc, String> {
    // The floors every device recorded, per device they apply to, joined.
    let mut floors: BTreeMap<String, Floor> = BTreeMap::new();
    for d in devices.values() {
        for (target, f) in &d.floors {
            let joined = match floors.remove(target) {
                None => f.clone(),
                Some(g) => join_floor(profile, g, f)?,
            };
            floors.insert(target.clone(), joined);
        }
    }
    if profile.name == "tally" {
        return native(&devices, &floors);
    }
    let rules = counter_rules(profile);
    let mut doc = (profile.empty)();
    let mut residual = json!({});
    for (key, d) in &devices {
        let floor = floors.get(key);
        for s in &d.shards {
            let c = above(profile, &s.counters, floor.and_then(|f| f.days.get(&s.day)))?;
            residual = algebra::combine(rules, Op::Add, &residual, &c).map_err(|e| e.to_string())?;
        }
        if let Some(res) = &d.residual {
            let c = above(profile, res, floor.map(|f| &f.residual))?;
            residual = algebra::combine(rules, Op::Add, &residual, &c).map_err(|e| e.to_string())?;
        }
    }
    doc = algebra::combine(rules, Op::Add, &doc, &residual).map_err(|e| e.to_string())?;
    if let Some(spec) = &profile.records {
        // What the records add to the counters, summed per counter in the order they come
        // (as adding each to the document would), then put in the document once each.
        let mut sums = Sums::default();
        for (key, d) in &devices {
            let floor = floors.get(key);
            for r in d.shards.iter().flat_map(|s| s.records.values()) {
                if floor.is_some_and(|f| r.seq <= f.reset_seq) {
                    continue;
                }
                let mut err = None;
                (spec.contribute)(&r.caps, &r.body, &mut |path: &[&str], n: Num| {
                    if let Err(e) = sums.add(&doc, path, n) {
                        err = Some(e);
                    }
                })
                .map_err(|e| e.to_string())?;
                if let Some(e) = err {
                    return Err(e);
                }
            }
        }
        sums.put(&mut doc)?;
        let mut placed: Vec<(Vec<String>, Value)> = Vec::new();
        for (key, d) in devices {
            let floor = floors.get(&key);
            for r in d.shards.into_iter().flat_map(|s| s.records.into_values()) {
                if floor.is_none_or(|f| r.seq > f.reset_seq && r.seq > f.cleared_seq) {
                    placed.push((r.caps, r.body));
                }
            }
        }
        // Records go where the format keeps them, oldest first.
        let mut groups: BTreeMap<Vec<String>, Vec<Placed>> = BTreeMap::new();
        for (caps, body) in placed {
            let (id, time) = match spec.identity_of_value.and_then(|f| f(&caps, &body)) {
                Some(it) => it,
                None => (spec.identity)(&caps, &body.to_string()).map_err(|e| e.to_string())?,
            };
            groups.entry(caps).or_default().push((time, id, body));
        }
        let keep = (spec.keep_newest)(&doc);
        for (caps, mut recs) in groups {
            recs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            if let Some(k) = keep {
                if recs.len() > k {
                    let excess = recs.len() - k;
                    recs.drain(..excess);
                }
            }
            let mut caps_iter = caps.iter();
            let path: Vec<String> = spec
                .container
                .iter()
                .map(|s| if *s == "*" { caps_iter.next().cloned().unwrap_or_default() } else { (*s).to_string() })
                .collect();
            set_at(&mut doc, &path, Value::Array(recs.into_iter().map(|(_, _, b)| b).collect()));
        }
        if let Some(finish) = profile.finish {
            let texts: Vec<String> = records_of(profile, &doc);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            finish(&mut doc, &refs).map_err(|e| e.to_string())?;
        }
    }
    sort_maps(profile, &mut doc, &mut Vec::new());
    Ok(ViewDoc { profile, doc, residual })
}

fn join_floor(profile: &'static Profile, mut a: Floor, b: &Floor) -> std::result::Result<Floor, String> {
    a.reset_seq = a.reset_seq.max(b.reset_seq);
    a.cleared_seq = a.cleared_seq.max(b.cleared_seq);
    for (d, c) in &b.days {
        let joined = match a.days.get(d) {
            Some(x) => super::shard::counters_join(profile, x, c).map_err(|e| e.to_string())?,
            None => c.clone(),
        };
        a.days.insert(d.clone(), joined);
    }
    a.residual = super::shard::counters_join(profile, &a.residual, &b.residual).map_err(|e| e.to_string())?;
    Ok(a)
}

/// Every record of a document, as text (for a profile's `finish`).
fn records_of(profile: &Profile, doc: &Value) -> Vec<String> {
    crate::report::records(profile, doc).into_iter().map(|(_, v)| v.to_string()).collect()
}

/// Sums per counter path, in the order paths first come, each starting from what the
/// document holds there.
#[derive(Default)]
struct Sums {
    index: std::collections::HashMap<String, usize>,
    sums: Vec<(Vec<String>, Num)>,
    key: String,
}

impl Sums {
    fn add(&mut self, doc: &Value, path: &[&str], n: Num) -> std::result::Result<(), String> {
        self.key.clear();
        for p in path {
            self.key.push_str(p);
            self.key.push('\u{1f}');
        }
        let i = match self.index.get(self.key.as_str()) {
            Some(&i) => i,
            None => {
                let mut at = Some(doc);
                for k in path {
                    at = at.and_then(|v| v.get(k));
                }
                let old = at.and_then(Num::from_value).and_then(|r| r.ok()).unwrap_or(Num::ZERO);
                self.index.insert(self.key.clone(), self.sums.len());
                self.sums.push((path.iter().map(|p| p.to_string()).collect(), old));
                self.sums.len() - 1
            }
        };
        let (p, sum) = &mut self.sums[i];
        *sum = sum.plus(n).map_err(|_| format!("{}: the sum does not fit 64 bits", p.join(".")))?;
        Ok(())
    }

    fn put(self, doc: &mut Value) -> std::result::Result<(), String> {
        for (path, sum) in self.sums {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            set_num(doc, &path, sum)?;
        }
        Ok(())
    }
}

/// Sets a counter, making the objects on its path.
fn set_num(doc: &mut Value, path: &[&str], n: Num) -> std::result::Result<(), String> {
    let m = container_at(doc, path).ok_or_else(|| format!("{}: not an object", path.join(".")))?;
    let v = n.to_value().map_err(|_| format!("{}: the sum does not fit 64 bits", path.join(".")))?;
    m.insert(path[path.len() - 1].to_string(), v);
    Ok(())
}

fn set_at(doc: &mut Value, path: &[String], v: Value) {
    if let Some(m) = container_at(doc, path) {
        m.insert(path[path.len() - 1].clone(), v);
    }
}

/// The object holding the last key of `path`, the objects before it made (anything else
/// there replaced); `None` if what holds it is not an object.
fn container_at<'a>(doc: &'a mut Value, path: &[impl AsRef<str>]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = doc;
    for k in &path[..path.len() - 1] {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur.as_object_mut().expect("object").entry(k.as_ref()).or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
}

/// Writes the keys of map-like objects sorted, as the applications do.
fn sort_maps(profile: &Profile, v: &mut Value, path: &mut Vec<String>) {
    let Value::Object(m) = v else { return };
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    if crate::engine::rule_kind(profile.rules, &keys) == Kind::Map {
        m.sort_keys();
    }
    for (k, child) in m.iter_mut() {
        path.push(k.clone());
        sort_maps(profile, child, path);
        path.pop();
    }
}

/// The native view: every device's hour cells under its name, totals, and the newest
/// records.
fn native(
    devices: &BTreeMap<String, DeviceData>,
    floors: &BTreeMap<String, Floor>,
) -> std::result::Result<ViewDoc, String> {
    let zero = || -> Map<String, Value> {
        profile::COUNTERS
            .iter()
            .map(|k| (k.to_string(), if profile::is_money(k) { json!(0.0) } else { json!(0) }))
            .collect()
    };
    let mut totals = Value::Object(zero());
    let mut hours: BTreeMap<String, Value> = BTreeMap::new();
    // First and last instants per device name.
    let mut devs: BTreeMap<String, (String, String)> = BTreeMap::new();
    let instant = |v: &Value| crate::profile::parse_instant(v);
    // Records by reference, with their time read once (the sort compares each many times);
    // only the newest are copied into the view.
    let mut recent: Vec<(Option<profile::Instant>, &Value, &str)> = Vec::new();
    let names: Vec<String> = devices.iter().map(|(key, d)| d.name.clone().unwrap_or_else(|| key.clone())).collect();
    for ((key, d), name) in devices.iter().zip(&names) {
        let floor = floors.get(key);
        for s in &d.shards {
            let fday = floor.and_then(|f| f.days.get(&s.day));
            if let Some(times) = s.counters.get("times") {
                if let (Some(f), Some(l)) = (times.get("first"), times.get("last")) {
                    let e = devs
                        .entry(name.clone())
                        .or_insert_with(|| (f.as_str().unwrap_or("").into(), l.as_str().unwrap_or("").into()));
                    if instant(f) < instant(&json!(e.0)) {
                        e.0 = f.as_str().unwrap_or("").into();
                    }
                    if instant(l) > instant(&json!(e.1)) {
                        e.1 = l.as_str().unwrap_or("").into();
                    }
                }
            }
            for (hh, providers) in s.counters.as_object().into_iter().flatten() {
                if hh == "times" {
                    continue;
                }
                let hour = format!("{}T{hh}", s.day);
                for (provider, apis) in providers.as_object().into_iter().flatten() {
                    for (api, models) in apis.as_object().into_iter().flatten() {
                        for (model, c) in models.as_object().into_iter().flatten() {
                            let f = fday.and_then(|f| {
                                f.pointer(&format!("/{}/{}/{}/{}", esc(hh), esc(provider), esc(api), esc(model)))
                            });
                            // Every counter, zeros too, as the format writes cells.
                            let mut shown = zero();
                            let mut any = false;
                            for (k, v) in c.as_object().into_iter().flatten() {
                                let x = v.as_f64().unwrap_or(0.0)
                                    - f.and_then(|f| f.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
                                if x > 0.0 {
                                    any = true;
                                    shown.insert(
                                        k.clone(),
                                        if profile::is_money(k) { json!(x) } else { json!(x.round() as u64) },
                                    );
                                }
                            }
                            if !any {
                                continue;
                            }

                            let cell = hours.entry(hour.clone()).or_insert_with(|| json!({}));
                            super::fold::add_at(
                                cell,
                                &[name.to_string(), provider.clone(), api.clone(), model.clone()],
                                &shown,
                            )?;
                            super::fold::add_at(&mut totals, &[], &shown)?;
                        }
                    }
                }
            }
            for r in s.records.values() {
                if floor.is_some_and(|f| r.seq <= f.reset_seq.max(f.cleared_seq)) {
                    continue;
                }
                recent.push((r.body.get("timestamp").and_then(crate::profile::parse_instant), &r.body, name));
            }
        }
    }
    let shown = |(_, body, name): &(Option<profile::Instant>, &Value, &str)| {
        let mut body = (*body).clone();
        body["device"] = json!(name);
        body
    };
    // Newest last, ties by content. Only the newest are ordered by content: those from
    // the time of the oldest kept one on (every record of that time may be kept).
    recent.sort_by_key(|a| a.0);
    let cut = recent.get(recent.len().saturating_sub(profile::RECENT_LIMIT)).map(|r| r.0);
    let from = cut.map_or(0, |t| recent.partition_point(|r| r.0 < t));
    let mut newest: Vec<(Option<profile::Instant>, String, Value)> = recent[from..]
        .iter()
        .map(|r| {
            let v = shown(r);
            (r.0, canonical(&v), v)
        })
        .collect();
    newest.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let recent: Vec<Value> =
        newest.drain(newest.len().saturating_sub(profile::RECENT_LIMIT)..).map(|(_, _, v)| v).collect();
    let first = devs.values().map(|d| d.0.clone()).min_by_key(|t| instant(&json!(t)));
    let last = devs.values().map(|d| d.1.clone()).max_by_key(|t| instant(&json!(t)));
    let mut doc = json!({ "format": profile::NATIVE_FORMAT });
    if let Some(f) = first {
        doc["created_at"] = json!(f);
    }
    if let Some(l) = last {
        doc["updated_at"] = json!(l);
    }
    doc["recent_limit"] = json!(profile::RECENT_LIMIT);
    doc["totals"] = totals;
    let mut hours = Value::Object(hours.into_iter().collect());
    sort_all(&mut hours);
    doc["hours"] = hours;
    doc["devices"] =
        Value::Object(devs.into_iter().map(|(n, (f, l))| (n, json!({"first_seen": f, "last_seen": l}))).collect());
    doc["recent"] = Value::Array(recent);
    let tally = profile::by_name("tally").expect("native");
    Ok(ViewDoc { profile: tally, residual: json!({}), doc })
}

fn sort_all(v: &mut Value) {
    if let Value::Object(m) = v {
        m.sort_keys();
        m.values_mut().for_each(sort_all);
    }
}

fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}
