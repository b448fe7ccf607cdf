//! Atomic writes, the one way the studio writes files and folders.
//!
//! A file is written to a temporary file beside its target (`.<name>.XXXXXX.tmp`), flushed
//! to disk, renamed onto the target, and then the folder is flushed so that the rename
//! itself survives a power loss ([`write_file_atomic`]). A folder is built in a temporary
//! folder beside its target (`.<name>.XXXXXX.tmp`), its files flushed, and renamed into
//! place ([`replace_dir_atomic`]). On any error the temporary is removed, so a failed write
//! leaves the target as it was and nothing else behind. A process killed mid-write (or a
//! power loss) can leave a temporary behind but never a partial target;
//! [`remove_leftovers`] clears them out of a folder the studio owns.
//!
//! Depends on nothing else in the crate.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How the name of a temporary file or folder ends.
pub const TEMP_SUFFIX: &str = ".tmp";
/// How the name of the folder that holds a replaced folder until it is removed ends.
const ASIDE_SUFFIX: &str = ".old";
/// Length of the random part tempfile puts between prefix and suffix.
const RAND_LEN: usize = 6;

/// A write that failed, with the path it concerns (the target, or the folder where the
/// temporary could not be made). The I/O error is part of the message, not a separate
/// source, as in the crate's other error types.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub error: io::Error,
}

impl WriteError {
    pub fn new(path: impl Into<PathBuf>, error: io::Error) -> Self {
        Self {
            path: path.into(),
            error,
        }
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |error| WriteError::new(path, error)
}

/// The folder `path` is in (`.` for a bare name) and its file name.
fn split(path: &Path) -> Result<(PathBuf, String), WriteError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            WriteError::new(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            )
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// `.<name>.` as the temporaries' prefix.
fn builder<'a>(prefix: &'a str, suffix: &'a str) -> tempfile::Builder<'a, 'a> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(suffix).rand_bytes(RAND_LEN);
    b
}

/// Writes the file at `path` with `write`, atomically: readers see the old file or the new
/// one, never a part. `write` gets a buffered writer; it may stream. The new file keeps
/// the old one's permissions (a new file gets the usual ones, after the umask).
pub fn write_file_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let (dir, name) = split(path)?;
    let prefix = format!(".{name}.");
    let mut b = builder(&prefix, TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o666);
        b.permissions(fs::Permissions::from_mode(mode));
    }
    // Dropping `tmp` on any early return removes the temporary file.
    let mut tmp = b.tempfile_in(&dir).map_err(at(&dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        write(&mut w).map_err(at(path))?;
        w.flush().map_err(at(path))?;
    }
    tmp.as_file().sync_all().map_err(at(path))?;
    // A failed persist hands the temporary back inside the error, which removes it.
    tmp.persist(path)
        .map_err(|e| WriteError::new(path, e.error))?;
    sync_dir(&dir).map_err(at(&dir))
}

/// [`write_file_atomic`] with the whole content at hand.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_file_atomic(path, |w| w.write_all(bytes))
}

/// Builds the folder `target` with `build` (which fills the empty folder it is given) and
/// puts it in place of whatever was there, atomically as far as the filesystem allows: the
/// new folder is complete before it gets the name. An existing `target` is first renamed
/// into a temporary folder beside it and removed once the new one is in place; between
/// those two renames the name is briefly free, with the old folder complete under its
/// temporary name, where [`remove_leftovers`] puts it back after a crash. On an error from
/// `build` or the filesystem, the temporary folder is removed and the old `target` stays.
pub fn replace_dir_atomic<E: From<WriteError>>(
    target: &Path,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let (parent, name) = split(target)?;
    let prefix = format!(".{name}.");
    let mut b = builder(&prefix, TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(fs::Permissions::from_mode(0o777));
    }
    let tmp = b.tempdir_in(&parent).map_err(at(&parent))?;
    build(tmp.path())?;
    sync_tree(tmp.path()).map_err(at(target))?;
    let aside = if fs::symlink_metadata(target).is_ok() {
        let aside = builder(&prefix, ASIDE_SUFFIX)
            .tempdir_in(&parent)
            .map_err(at(&parent))?;
        fs::rename(target, aside.path().join(&name)).map_err(at(target))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = fs::rename(tmp.path(), target) {
        if let Some(aside) = &aside {
            // Best effort; if this fails too, `remove_leftovers` puts it back later.
            let _ = fs::rename(aside.path().join(&name), target);
        }
        return Err(WriteError::new(target, e).into());
    }
    // The temporary folder has the target's name now: nothing to remove.
    let _ = tmp.keep();
    sync_dir(&parent).map_err(at(&parent))?;
    if let Some(aside) = aside {
        // The new folder is in place; an old one that cannot be removed now is a leftover
        // for `remove_leftovers`, not a failed write.
        let _ = aside.close();
    }
    Ok(())
}

/// Flushes a folder's entries (a rename or a new file in it) to disk. Filesystems that
/// cannot (`EINVAL`, unsupported) and folders that cannot be opened are passed over.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let Ok(f) = File::open(dir) else {
            return Ok(());
        };
        match f.sync_all() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) =>
            {
                Ok(())
            }
            r => r,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Flushes every file and folder under `dir` (and `dir`) to disk.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_file(&path)?;
        }
    }
    sync_dir(dir)
}

fn sync_file(path: &Path) -> io::Result<()> {
    // Windows flushes only through a handle that may write.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(cfg!(not(unix)))
        .open(path)?;
    f.sync_all()
}

/// What a temporary of this module is, from its name.
enum Leftover {
    /// A file or folder being written (`.<name>.XXXXXX.tmp`).
    Temp,
    /// The folder holding a replaced `<name>` (`.<name>.XXXXXX.old`).
    Aside(String),
}

fn leftover(file_name: &str) -> Option<Leftover> {
    let rest = file_name.strip_prefix('.')?;
    let (rest, aside) = match rest.strip_suffix(TEMP_SUFFIX) {
        Some(r) => (r, false),
        None => (rest.strip_suffix(ASIDE_SUFFIX)?, true),
    };
    let (name, rand) = rest.rsplit_once('.')?;
    if name.is_empty() || rand.len() != RAND_LEN || !rand.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(if aside {
        Leftover::Aside(name.to_string())
    } else {
        Leftover::Temp
    })
}

/// Whether `file_name` is the name of a temporary this module makes (one that
/// [`remove_leftovers`] removes).
pub fn is_temp_name(file_name: &str) -> bool {
    leftover(file_name).is_some()
}

/// Clears what interrupted writes left in `dir` (not below it): temporary files and
/// folders are removed, and a folder that was being replaced when the process died goes
/// back under its name if nothing took it. Only for folders the studio owns, and not while
/// something writes in them. Returns the names removed or put back.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<String>, WriteError> {
    let mut temps = Vec::new();
    let mut asides = Vec::new();
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        match leftover(&file_name) {
            Some(Leftover::Temp) => temps.push(file_name),
            Some(Leftover::Aside(name)) => asides.push((file_name, name)),
            None => {}
        }
    }
    // Put replaced folders back first: the temporary that would have replaced one may be
    // incomplete.
    for (aside, name) in &asides {
        let old = dir.join(aside).join(name);
        let target = dir.join(name);
        if fs::symlink_metadata(&target).is_err() && fs::symlink_metadata(&old).is_ok() {
            fs::rename(&old, &target).map_err(at(&target))?;
        }
    }
    let mut done = Vec::new();
    for name in temps.into_iter().chain(asides.into_iter().map(|a| a.0)) {
        let path = dir.join(&name);
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => done.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WriteError::new(path, e)),
        }
    }
    if !done.is_empty() {
        sync_dir(dir).map_err(at(dir))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_content_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_bytes_atomic(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_file_atomic(&p, |w| {
            w.write_all(b"sec")?;
            w.write_all(b"ond")
        })
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_writer_that_fails_midway_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_bytes_atomic(&p, b"old content").unwrap();
        let err = write_file_atomic(&p, |w| {
            // More than the buffer holds, so part of it reaches the temporary file.
            w.write_all(&vec![b'x'; 1 << 20])?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(err.path, p);
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert!(err.to_string().contains("a.json"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old content");
        assert_eq!(names(dir.path()), ["a.json"]);

        // Nor does a failed first write leave a target.
        let q = dir.path().join("b.json");
        assert!(write_file_atomic(&q, |_| Err(io::Error::other("no"))).is_err());
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = write_bytes_atomic(&missing.join("a.json"), b"x").unwrap_err();
        assert_eq!(err.path, missing);
    }

    #[cfg(unix)]
    #[test]
    fn a_rewritten_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes_atomic(&p, b"1").unwrap();
        // A new file gets what `fs::write` would give it, not tempfile's owner-only 0600.
        let plain = dir.path().join("plain.txt");
        fs::write(&plain, b"1").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
        fs::remove_file(&plain).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_bytes_atomic(&p, b"2").unwrap();
        assert_eq!(mode(&p), 0o640);
    }

    fn build_with<'a>(
        files: &'a [(&'a str, &'a str)],
    ) -> impl FnOnce(&Path) -> Result<(), WriteError> + 'a {
        move |tmp: &Path| {
            for (n, text) in files {
                write_bytes_atomic(&tmp.join(n), text.as_bytes())?;
            }
            Ok(())
        }
    }

    #[test]
    fn replace_dir_puts_a_complete_folder_in_place_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("step-1");
        replace_dir_atomic(&t, build_with(&[("a", "1"), ("b", "1")])).unwrap();
        assert_eq!(names(&t), ["a", "b"]);
        replace_dir_atomic(&t, build_with(&[("a", "2"), ("c", "2")])).unwrap();
        assert_eq!(names(&t), ["a", "c"]);
        assert_eq!(fs::read_to_string(t.join("a")).unwrap(), "2");
        assert_eq!(names(dir.path()), ["step-1"]);
    }

    #[test]
    fn a_failed_build_keeps_the_old_folder_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("step-1");
        replace_dir_atomic(&t, build_with(&[("a", "old")])).unwrap();
        let err = replace_dir_atomic(&t, |tmp: &Path| -> Result<(), WriteError> {
            write_bytes_atomic(&tmp.join("a"), b"new")?;
            Err(WriteError::new(tmp, io::Error::other("midway")))
        })
        .unwrap_err();
        assert!(err.to_string().contains("midway"));
        assert_eq!(names(&t), ["a"]);
        assert_eq!(fs::read_to_string(t.join("a")).unwrap(), "old");
        assert_eq!(names(dir.path()), ["step-1"]);
        // The same for a folder that did not exist: still none.
        let u = dir.path().join("step-2");
        assert!(replace_dir_atomic(&u, |_: &Path| Err(WriteError::new(
            &u,
            io::Error::other("no")
        )))
        .is_err());
        assert_eq!(names(dir.path()), ["step-1"]);
    }

    #[test]
    fn leftovers_are_removed_and_a_folder_caught_between_renames_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Killed while building step-3 (an old one was in place), while writing a file,
        // and between the two renames of replacing step-2.
        fs::create_dir_all(d.join("step-3")).unwrap();
        fs::create_dir_all(d.join(".step-3.aB3dE9.tmp")).unwrap();
        fs::write(
            d.join(".step-3.aB3dE9.tmp/adapter_model.safetensors"),
            b"half",
        )
        .unwrap();
        fs::write(d.join(".metrics.jsonl.Zz9Yy8.tmp"), b"half").unwrap();
        fs::create_dir_all(d.join(".step-2.Qw3rTy.old/step-2")).unwrap();
        fs::write(d.join(".step-2.Qw3rTy.old/step-2/a"), b"complete").unwrap();
        fs::create_dir_all(d.join(".step-2.Ui0pAs.tmp")).unwrap();
        // Not ours: a dotfile, a recovery file, a name with a random part of another length.
        for keep in [".keep", ".data.json.recovery.jsonl", ".x.abc.tmp"] {
            fs::write(d.join(keep), b"").unwrap();
        }
        assert!(is_temp_name(".step-3.aB3dE9.tmp"));
        assert!(!is_temp_name(".x.abc.tmp"));

        let mut removed = remove_leftovers(d).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [
                ".metrics.jsonl.Zz9Yy8.tmp",
                ".step-2.Qw3rTy.old",
                ".step-2.Ui0pAs.tmp",
                ".step-3.aB3dE9.tmp"
            ]
        );
        assert_eq!(
            names(d),
            [
                ".data.json.recovery.jsonl",
                ".keep",
                ".x.abc.tmp",
                "step-2",
                "step-3"
            ]
        );
        assert_eq!(fs::read_to_string(d.join("step-2/a")).unwrap(), "complete");
        assert!(remove_leftovers(d).unwrap().is_empty());
    }

    #[test]
    fn the_temporaries_this_module_makes_are_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.toml");
        let mut seen = Vec::new();
        write_file_atomic(&p, |_| {
            seen = names(dir.path());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1);
        assert!(is_temp_name(&seen[0]), "{seen:?}");
        let t = dir.path().join("adapter");
        replace_dir_atomic(&t, |tmp: &Path| -> Result<(), WriteError> {
            let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
            assert!(is_temp_name(&name), "{name}");
            Ok(())
        })
        .unwrap();
        // The aside folder of a replacement too.
        replace_dir_atomic(&t, |_: &Path| -> Result<(), WriteError> { Ok(()) }).unwrap();
        assert!(leftover(".adapter.abcDEF.old").is_some());
        assert_eq!(names(dir.path()), ["adapter", "run.toml"]);
    }
}
