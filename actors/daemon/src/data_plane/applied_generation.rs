//! The generation the data plane last applied, kept in a one-line file in
//! the state directory so a restarted daemon's Hello tells the truth.
//!
//! Written to a temporary file, synced, and renamed over the real one (then
//! the directory synced): a crash leaves the old number or the new one,
//! never half of one. A file that cannot be read as a number counts as 0
//! (with a warning): the controller then sends a full state, which is
//! always safe; claiming a generation never applied would not be.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use vpblu_messages::Generation;

/// The file's name inside the state directory.
pub const FILE: &str = "applied-generation";
const TEMPORARY: &str = ".applied-generation.tmp";

/// The generation file of one state directory.
#[derive(Clone, Debug)]
pub struct GenerationFile {
    dir: PathBuf,
}

impl GenerationFile {
    /// Creates the state directory (0700) if needed and reads the recorded
    /// generation (0 when there is none).
    pub fn open(dir: impl AsRef<Path>) -> io::Result<(Self, Generation)> {
        let dir = dir.as_ref().to_path_buf();
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let file = GenerationFile { dir };
        let generation = file.read()?;
        Ok((file, generation))
    }

    /// Removes the generation file (and a half-written one) from `dir`,
    /// then `dir` if that left it empty. Nothing else in `dir` is touched.
    pub fn remove(dir: &Path) -> io::Result<()> {
        for name in [FILE, TEMPORARY] {
            match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && e.kind() != io::ErrorKind::DirectoryNotEmpty => {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The recorded generation; 0 when the file is missing or unreadable
    /// as a number.
    pub fn read(&self) -> io::Result<Generation> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Generation::default()),
            Err(e) => return Err(e),
        };
        match text.trim().parse::<u64>() {
            Ok(n) => Ok(Generation(n)),
            Err(_) => {
                tracing::warn!(
                    path = %path.display(),
                    "the applied-generation file does not hold a number; saying 0 in the Hello \
                     (the controller will send a full state)"
                );
                Ok(Generation::default())
            }
        }
    }

    /// Records `generation` atomically.
    pub fn store(&self, generation: Generation) -> io::Result<()> {
        let temporary = self.dir.join(TEMPORARY);
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        writeln!(file, "{}", generation.0)?;
        file.sync_all()?;
        fs::rename(&temporary, self.path())?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_generation_is_read_back_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, first) = GenerationFile::open(&state).unwrap();
        assert_eq!(first, Generation(0), "nothing recorded yet");
        file.store(Generation(41)).unwrap();
        file.store(Generation(42)).unwrap();
        let (_, again) = GenerationFile::open(&state).unwrap();
        assert_eq!(again, Generation(42));
        assert_eq!(fs::read_to_string(state.join(FILE)).unwrap(), "42\n");
        assert!(!state.join(TEMPORARY).exists());
    }

    #[test]
    fn garbage_counts_as_nothing_applied() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "forty-two").unwrap();
        let (_, generation) = GenerationFile::open(dir.path()).unwrap();
        assert_eq!(generation, Generation(0));
    }
}
