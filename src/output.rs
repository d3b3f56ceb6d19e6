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
/// `<dir>/.iterdeploy.lock` holding the owner's pid, created new (so two
/// processes cannot both create it) and removed when the claim is
/// dropped. A lock left by a process that no longer exists (a killed run)
/// is taken over; one of a live process is an error.
pub struct DirLock {
    path: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
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
                f.write_all(std::process::id().to_string().as_bytes())
                    .map_err(|e| Error::io(&path, e))?;
                return Ok(DirLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let alive = owner.trim().parse::<u32>().ok().is_some_and(|pid| {
                    pid == std::process::id()
                        || !Path::new("/proc/self").exists()
                        || Path::new(&format!("/proc/{pid}")).exists()
                });
                if alive {
                    return Err(Error::Invalid(format!(
                        "{} is in use by another iterdeploy run (pid {}); wait for it to finish, or write elsewhere with --out",
                        dir.display(),
                        owner.trim()
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

fn content_hash(bytes: &[u8]) -> String {
    use std::hash::Hasher;
    let mut h = crate::hashing::FxHasher::default();
    h.write(bytes);
    h.write_u64(bytes.len() as u64);
    format!("{:016x}", h.finish())
}

fn entry(dir: &Path, name: &str) -> Result<Entry> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(Entry {
        name: name.to_string(),
        bytes: bytes.len() as u64,
        hash: content_hash(&bytes),
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
    let text = std::fs::read_to_string(&mark)
        .map_err(|_| incomplete(format!("no {COMPLETE}: killed, or still running")))?;
    let entries: Vec<Entry> = serde_json::from_str(&text)
        .map_err(|e| incomplete(format!("{COMPLETE} is unreadable: {e}")))?;
    for want in &entries {
        let have =
            entry(dir, &want.name).map_err(|_| incomplete(format!("{} is missing", want.name)))?;
        if have != *want {
            return Err(incomplete(format!(
                "{} differs from the set {COMPLETE} lists: files of two runs are mixed",
                want.name
            )));
        }
    }
    Ok(())
}

/// The absolute, symlink-free form of `p`, also for a file that does not
/// exist yet (its directory is resolved, its name kept).
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let dir = parent_dir(p);
    match (dir.canonicalize(), p.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => p.to_path_buf(),
    }
}

/// Refuses to write any of `outputs` if it is one of the `inputs` files or
/// lies inside one of the `inputs` directories (by resolved path, so
/// `./a`, `a` and a link to it are the same file), before anything is
/// written: an output never destroys what it was made from.
pub fn refuse_overwriting_inputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    for out in outputs {
        let o = resolved(out);
        for input in inputs {
            let i = resolved(input);
            if o == i || (i.is_dir() && o.starts_with(&i)) {
                return Err(Error::Invalid(format!(
                    "refusing to write {}: it would overwrite the input {}; choose another --out",
                    out.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
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
