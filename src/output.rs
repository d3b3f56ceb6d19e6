//! Output files are written atomically: to a temporary file beside the
//! target, then renamed over it, so a reader (or a crash) never sees a
//! half-written CSV, plan or JSONL file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (tmp, mut f) = create_temp(path, "").map_err(|e| Error::io(path, e))?;
    let mut write = || -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        Error::io(path, e)
    })
}

/// The directory a file at `path` lives in ("." for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Marks our temporary files: `.<target name>.<pid>-<random>.tmp<ext>`.
const TEMP_MARK: &str = ".tmp";

/// A new temporary file beside `target`, ending in `ext` (e.g. ".png" for
/// an encoder that reads the extension). It is created with create-new
/// semantics, so an existing file or symlink of that name is never
/// followed or reused, and named with the process id and 64 unpredictable
/// bits (from the standard library's randomly keyed hasher, not the
/// project's seeded generator: names are not results).
pub fn create_temp(target: &Path, ext: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::hash::BuildHasher;
    let dir = parent_dir(target);
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for attempt in 0u32..16 {
        let r = std::collections::hash_map::RandomState::new().hash_one(attempt);
        let tmp = dir.join(format!(
            ".{name}.{}-{r:016x}{TEMP_MARK}{ext}",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("16 attempts"))
}

/// Removes the temporary files of ours in `dir` whose process is gone (a
/// killed run's leftovers); those of running processes are kept. Only on
/// Linux, where /proc says which processes exist; elsewhere nothing.
pub fn remove_stale_temps(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_file(e.path()).ok();
        }
    }
}

/// The process id in one of our temporary file names, if it is one.
fn temp_owner(name: &str) -> Option<u32> {
    let (head, _) = name.strip_prefix('.')?.rsplit_once(TEMP_MARK)?;
    let (_, tail) = head.rsplit_once('.')?;
    let (pid, random) = tail.split_once('-')?;
    (random.len() == 16 && random.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| pid.parse().ok())
        .flatten()
}

/// An exclusive claim on an output directory for one process: the file
/// `<dir>/.iterdeploy.lock` holding the owner's pid and its start time
/// (so a later, unrelated process that reuses the pid is not taken for
/// the owner), created new (so two processes cannot both create it) and
/// removed when the claim is dropped. A lock whose owner no longer runs
/// (a killed run) is taken over; one of a live owner is an error.
pub struct DirLock {
    path: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// A lock file holds a few dozen bytes; more is not one of ours.
const MAX_LOCK_BYTES: u64 = 4096;

/// The start time of process `pid` in clock ticks since boot (field 22
/// of `/proc/<pid>/stat`), if it runs and this is Linux.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's lock text: `<pid> <start time>` (start time 0 where
/// /proc does not say).
fn lock_text() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or(0))
}

/// Whether the owner a lock file names still runs: its pid exists and,
/// where the lock records one, with the same start time. Without /proc
/// (not Linux) every owner is taken to run.
fn owner_runs(text: &str) -> bool {
    let mut f = text.split_whitespace();
    let Some(pid) = f.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if pid == std::process::id() || !Path::new("/proc/self").exists() {
        return true;
    }
    match (
        start_time(pid),
        f.next().and_then(|t| t.parse::<u64>().ok()),
    ) {
        (None, _) => false,
        (Some(now), Some(then)) if then != 0 => now == then,
        (Some(_), _) => true,
    }
}

/// Claims `dir` (which must exist) for this process; see [`DirLock`].
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(".iterdeploy.lock");
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(lock_text().as_bytes())
                    .map_err(|e| Error::io(&path, e))?;
                return Ok(DirLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                if !meta.is_file() || meta.len() > MAX_LOCK_BYTES {
                    return Err(Error::Invalid(format!(
                        "{} is not an iterdeploy lock ({}); remove it if no run is writing to {}",
                        path.display(),
                        if meta.is_file() {
                            format!("{} bytes", meta.len())
                        } else {
                            "not a plain file".into()
                        },
                        dir.display()
                    )));
                }
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                if owner_runs(&owner) {
                    return Err(Error::Invalid(format!(
                        "{} is in use by another iterdeploy run (pid {}); wait for it to finish, or write elsewhere with --out",
                        dir.display(),
                        owner.split_whitespace().next().unwrap_or("?")
                    )));
                }
                // The owner is gone: a killed run's lock.
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::Invalid(format!(
        "{}: could not take the lock {}",
        dir.display(),
        path.display()
    )))
}

/// The file that marks a run directory's outputs as one complete set.
pub const COMPLETE: &str = "complete.json";

/// One file of a complete set: its name, size and content hash.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    name: String,
    bytes: u64,
    hash: String,
}

/// The size and content hash of everything `from` yields, streamed
/// through a buffer of `buf_len` bytes (a multiple of 8): a set's files
/// are hashed without holding them, so an output larger than the input
/// bound (a long run's `completions.jsonl` reached 290 MB) can be marked
/// and checked. The hash is FxHash of the bytes, then of their count. Each
/// write but the last is a full buffer, a multiple of 8 bytes, so the
/// hash equals that of one write of the whole content.
fn content_hash(from: &mut impl std::io::Read, buf_len: usize) -> std::io::Result<(u64, String)> {
    use std::hash::Hasher;
    debug_assert!(buf_len > 0 && buf_len.is_multiple_of(8));
    let mut h = crate::hashing::FxHasher::default();
    let mut buf = vec![0u8; buf_len];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match from.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        h.write(&buf[..n]);
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    h.write_u64(total);
    Ok((total, format!("{:016x}", h.finish())))
}

/// The buffer [`entry`] hashes through: 1 MiB.
const HASH_BUFFER: usize = 1 << 20;

/// The entry of file `name` of `dir`: a plain name (no folder, no `..`),
/// read as a regular file (never a link, FIFO or device), streamed.
fn entry(dir: &Path, name: &str) -> Result<Entry> {
    let plain = Path::new(name)
        .file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(name));
    if !plain || name == ".." || name == "." {
        return Err(Error::Invalid(format!(
            "{}: `{name}` is not a file of this folder",
            dir.display()
        )));
    }
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Invalid(format!(
            "{}: a symbolic link; a run's files are its own",
            path.display()
        )));
    }
    let mut file = crate::input::open_regular(&path)?;
    let (bytes, hash) = content_hash(&mut file, HASH_BUFFER).map_err(|e| Error::io(&path, e))?;
    Ok(Entry {
        name: name.to_string(),
        bytes,
        hash,
    })
}

/// Starts replacing the set in `dir`: removes its completion mark first,
/// so a run killed from here on leaves a directory that readers refuse
/// instead of a mix of old and new files that looks whole.
pub fn begin_set(dir: &Path) -> Result<()> {
    let mark = dir.join(COMPLETE);
    match std::fs::remove_file(&mark) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&mark, e)),
    }
}

/// Marks `files` (names in `dir`, all written) as one complete set: their
/// sizes and hashes go to `complete.json`, written last.
pub fn finish_set(dir: &Path, files: &[String]) -> Result<()> {
    let entries = files
        .iter()
        .map(|f| entry(dir, f))
        .collect::<Result<Vec<_>>>()?;
    let text = serde_json::to_string_pretty(&entries).expect("entries serialise");
    write_atomic(&dir.join(COMPLETE), text.as_bytes())
}

/// Refuses a run directory whose outputs are not the complete set its
/// `complete.json` lists (missing: a run was killed or is still writing;
/// a size or hash that differs: files of two runs are mixed).
pub fn check_set(dir: &Path) -> Result<()> {
    let mark = dir.join(COMPLETE);
    let incomplete = |why: String| {
        Error::Invalid(format!(
            "{}: not a complete run ({why}); rerun `iterdeploy run` for it",
            dir.display()
        ))
    };
    if !mark.exists() {
        return Err(incomplete(format!(
            "no {COMPLETE}: killed, or still running"
        )));
    }
    let text = crate::input::read_text(&mark)?;
    let entries: Vec<Entry> = serde_json::from_str(&text)
        .map_err(|e| incomplete(format!("{COMPLETE} is unreadable: {e}")))?;
    for want in &entries {
        let have = entry(dir, &want.name).map_err(|e| {
            incomplete(if dir.join(&want.name).exists() {
                e.to_string()
            } else {
                format!("{} is missing", want.name)
            })
        })?;
        if have != *want {
            return Err(incomplete(format!(
                "{} differs from the set {COMPLETE} lists: files of two runs are mixed",
                want.name
            )));
        }
    }
    Ok(())
}

/// Refuses to write a set of `ours` into `dir` when `dir` already holds a
/// complete set of another kind (its `complete.json` lists a file not in
/// `ours`): `report --out plots/headline` would otherwise replace a
/// finished simulation's `results.csv` and `summary.md`.
pub fn refuse_foreign_set(dir: &Path, ours: &[&str]) -> Result<()> {
    let mark = dir.join(COMPLETE);
    if !mark.is_file() {
        return Ok(());
    }
    let text = crate::input::read_text(&mark)?;
    let entries: Vec<Entry> = serde_json::from_str(&text).unwrap_or_default();
    if let Some(other) = entries.iter().find(|e| !ours.contains(&e.name.as_str())) {
        return Err(Error::Invalid(format!(
            "refusing to write into {}: it holds another complete set of outputs (its {COMPLETE} lists `{}`); choose another --out",
            dir.display(),
            other.name
        )));
    }
    Ok(())
}

/// The absolute, symlink-free path the kernel will write to for `p`,
/// whether or not `p` exists yet: its longest existing ancestor is
/// canonicalised (following links), and the rest, which does not exist
/// and so holds no link, is applied lexically, each `..` removing the
/// component before it. So `fx/new/../gen0.jsonl` is `fx/gen0.jsonl`
/// even while `fx/new` does not exist: exactly where the file lands once
/// the missing folders are created.
pub fn resolved(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(d) => d.join(p),
            Err(_) => p.to_path_buf(),
        }
    };
    let parts: Vec<Component> = abs.components().collect();
    for k in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..k].iter().collect();
        let Ok(mut out) = prefix.canonicalize() else {
            continue;
        };
        for c in &parts[k..] {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(n) => out.push(n),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return out;
    }
    abs
}

/// Refuses to write any of `outputs` if it is one of the `inputs` files or
/// lies inside one of the `inputs` directories, before anything is
/// written or any folder created: an output never destroys what it was
/// made from. Paths are compared as [`resolved`], so `./a`, `a`, `x/../a`
/// (with or without `x`) and a link to `a` are the same file.
pub fn refuse_overwriting_inputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    for out in outputs {
        let o = resolved(out);
        for input in inputs {
            let i = resolved(input);
            if o == i || (i.is_dir() && o.starts_with(&i)) {
                return Err(Error::Invalid(format!(
                    "refusing to write {}: it would overwrite the input {}{}; choose another --out",
                    out.display(),
                    input.display(),
                    if o == i { "" } else { " (it lies inside it)" }
                )));
            }
        }
    }
    Ok(())
}

/// Refuses `dir` as a folder to write into if it is a symbolic link (or a
/// file): a link planted there would send our writes and deletions into
/// its target. A folder that does not exist yet is fine.
pub fn refuse_linked_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Invalid(format!(
            "refusing to write into {}: it is a symbolic link (to {}); remove it or choose another --out",
            dir.display(),
            std::fs::read_link(dir).map_or("?".into(), |t| t.display().to_string())
        ))),
        Ok(m) if !m.is_dir() => Err(Error::Invalid(format!(
            "refusing to write into {}: it is not a folder",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// A CSV field, quoted if it holds a comma, quote or newline (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock records its owner's pid and start time: a live process that
    /// merely reuses the pid (here pid 1, with another start time) does
    /// not hold the folder; the owner itself (pid 1 with its own start
    /// time) does; a lock file too large to be ours is refused, not read
    /// (issue 27, item 2).
    #[test]
    fn locks_name_their_owner_by_pid_and_start_time() {
        let dir = std::env::temp_dir().join(format!("iterdeploy-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join(".iterdeploy.lock");
        let Some(init_start) = start_time(1) else {
            return; // not Linux: no /proc to name owners by
        };
        std::fs::write(&lock, format!("1 {}", init_start + 1)).unwrap();
        let held = lock_dir(&dir).expect("a reused pid does not hold the folder");
        assert!(
            std::fs::read_to_string(&lock)
                .unwrap()
                .starts_with(&std::process::id().to_string())
        );
        drop(held);
        assert!(!lock.exists());
        std::fs::write(&lock, format!("1 {init_start}")).unwrap();
        let e = lock_dir(&dir)
            .err()
            .expect("the live owner holds it")
            .to_string();
        assert!(
            e.contains("in use by another iterdeploy run (pid 1)"),
            "{e}"
        );
        std::fs::write(&lock, "1 ".repeat(3000)).unwrap();
        let e = lock_dir(&dir).err().expect("oversized").to_string();
        assert!(
            e.contains("not an iterdeploy lock") && e.contains("6000 bytes"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `complete.json` is read within the input bound, and may name only
    /// plain files of its own folder, never through `..` or a link
    /// (issue 27, item 2).
    #[test]
    fn a_manifest_is_bounded_and_names_only_its_own_files() {
        let dir = std::env::temp_dir().join(format!("iterdeploy-set-{}", std::process::id()));
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(dir.join("outside.csv"), "secret").unwrap();
        std::fs::write(run.join("a.csv"), "a").unwrap();
        finish_set(&run, &["a.csv".to_string()]).unwrap();
        check_set(&run).unwrap();
        let entry_of =
            |name: &str| format!("[{{\"name\": \"{name}\", \"bytes\": 6, \"hash\": \"0\"}}]");
        std::fs::write(run.join(COMPLETE), entry_of("../outside.csv")).unwrap();
        let e = check_set(&run).unwrap_err().to_string();
        assert!(e.contains("not a file of this folder"), "{e}");
        std::os::unix::fs::symlink(dir.join("outside.csv"), run.join("link.csv")).unwrap();
        std::fs::write(run.join(COMPLETE), entry_of("link.csv")).unwrap();
        let e = check_set(&run).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A sparse manifest past the bound: refused without reading it all.
        let f = std::fs::File::create(run.join(COMPLETE)).unwrap();
        f.set_len(crate::input::MAX_INPUT_BYTES + 1).unwrap();
        let e = check_set(&run).unwrap_err().to_string();
        assert!(e.contains("larger than 256 MiB"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The streamed hash is the hash of the whole content at once, for
    /// every size around the buffer's and for reads that return less than
    /// asked; and a set whose file is larger than the input bound (a
    /// sparse one here) is marked and checked, and a change in its last
    /// byte is seen.
    #[test]
    fn a_set_of_files_past_the_input_bound_is_hashed_streamed() {
        use std::hash::Hasher;
        let whole = |bytes: &[u8]| {
            let mut h = crate::hashing::FxHasher::default();
            h.write(bytes);
            h.write_u64(bytes.len() as u64);
            format!("{:016x}", h.finish())
        };
        /// A reader that returns at most 5 bytes a call.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let k = out.len().min(5).min(self.0.len());
                out[..k].copy_from_slice(&self.0[..k]);
                self.0 = &self.0[k..];
                Ok(k)
            }
        }
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100] {
            let d = &data[..len];
            let (n, hash) = content_hash(&mut Trickle(d), 16).unwrap();
            assert_eq!((n, hash), (len as u64, whole(d)), "{len} bytes");
        }
        let dir = std::env::temp_dir().join(format!("iterdeploy-big-set-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("completions.jsonl");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(crate::input::MAX_INPUT_BYTES + 9).unwrap();
        finish_set(&dir, &["completions.jsonl".to_string()]).unwrap();
        check_set(&dir).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.seek(SeekFrom::End(-1)).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        let e = check_set(&dir).unwrap_err().to_string();
        assert!(e.contains("files of two runs are mixed"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A symlink planted where a temporary name could be is never
    /// followed: temporary files are created new, under names nobody can
    /// predict, and a stale one of a dead process is removed.
    #[test]
    fn temporary_files_never_follow_links_and_stale_ones_go() {
        let dir = std::env::temp_dir().join(format!("iterdeploy-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "keep").unwrap();
        // The old fixed name, and any guess an attacker could make.
        let planted = dir.join(format!(".out.csv.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&dir.join("out.csv"), b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(dir.join("out.csv")).unwrap(), "new");
        let (a, _) = create_temp(&dir.join("x.png"), ".png").unwrap();
        let (b, _) = create_temp(&dir.join("x.png"), ".png").unwrap();
        assert_ne!(a, b);
        assert!(a.to_string_lossy().ends_with(".png"));
        assert_eq!(
            temp_owner(&a.file_name().unwrap().to_string_lossy()),
            Some(std::process::id())
        );
        // A leftover of a process that no longer exists (pid 4194304 is
        // above Linux's pid_max) goes; ours stays.
        let stale = dir.join(".y.csv.4194304-0123456789abcdef.tmp");
        std::fs::write(&stale, "").unwrap();
        remove_stale_temps(&dir);
        assert!(!stale.exists() && a.exists() && victim.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
