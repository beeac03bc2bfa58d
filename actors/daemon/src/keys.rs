//! The node's WireGuard identity: an x25519 private key kept in a file that
//! only root can read, reused across restarts, and a second ("staged") key
//! during rotation.
//!
//! On disk, under the key directory (mode 0700):
//!
//! - `private.key` — the active key, standard base64 like `wg genkey` prints,
//!   mode 0600. Created once; a restart reads it back (it must never rotate
//!   the key by itself).
//! - `staged.key` — the next key while a rotation is between Prepare and
//!   Activate/rollback; same format and mode.
//!
//! Files are written to a temporary name opened with `O_EXCL` and linked into
//! place, so a crash never leaves a half-written key under a real name. The
//! key store refuses to start on a group/world-accessible directory or file,
//! or on a file that does not hold a 32-byte base64 key, and says how to fix
//! it; it never repairs permissions behind the operator's back.
//!
//! Private keys live in [`PrivateKey`], which zeroizes on drop, has a redacted
//! `Debug`, and no `Display` or `Serialize`.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use vpblu_messages::PublicKey;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// File name of the active key inside the key directory.
pub const ACTIVE_FILE: &str = "private.key";
/// File name of the staged (next) key inside the key directory.
pub const STAGED_FILE: &str = "staged.key";
/// The active key's previous file while `activate` swaps keys; scrubbed right
/// after, and on the next `open` if a crash left it behind.
const RETIRED_FILE: &str = ".retired.key";

/// An x25519 private key. Zeroized on drop; `Debug` prints
/// `PrivateKey(<redacted>)`; there is deliberately no `Display`, `Serialize`
/// or `Clone`.
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh random key, clamped the way `wg genkey` clamps it.
    pub fn generate() -> Self {
        let secret = StaticSecret::random();
        let mut bytes = Zeroizing::new(secret.to_bytes());
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(StaticSecret::from(*bytes))
    }

    /// Wraps raw key bytes (taken by reference so the caller's zeroizing
    /// buffer stays the only other copy).
    pub fn from_bytes(bytes: &Zeroizing<[u8; 32]>) -> Self {
        PrivateKey(StaticSecret::from(**bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw secret, for handing to WireGuard only.
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Standard base64 (44 characters), in a buffer zeroized on drop.
    fn to_base64(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(44));
        STANDARD.encode_string(self.0.as_bytes(), &mut text);
        text
    }

    /// Parses a key file's content: one `wg genkey`-style base64 key,
    /// surrounding whitespace allowed. The error says what is wrong without
    /// repeating the content.
    pub fn from_key_file(content: &[u8]) -> Result<Self, &'static str> {
        PrivateKey::from_base64(content)
    }

    /// Parses `wg genkey`-style base64 (surrounding whitespace allowed).
    /// The error says what is wrong without repeating the text.
    fn from_base64(text: &[u8]) -> Result<Self, &'static str> {
        let text = text.trim_ascii();
        if text.is_empty() {
            return Err("the file is empty");
        }
        if text.len() != 44 {
            return Err("a key is exactly 44 base64 characters (32 bytes)");
        }
        let decoded =
            Zeroizing::new(STANDARD.decode(text).map_err(|_| "the content is not standard base64")?);
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            decoded.as_slice().try_into().map_err(|_| "the content does not decode to 32 bytes")?,
        );
        Ok(PrivateKey::from_bytes(&bytes))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Why the key store could not open, stage or switch keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The key directory could not be created or inspected.
    #[error("key directory {path}: {source}; check that the parent exists and is writable by the daemon")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key directory path exists but is not a directory.
    #[error("key directory {path} exists but is not a directory; move it away or point the daemon elsewhere")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The key directory lets group or others in.
    #[error(
        "key directory {path} has mode {mode:04o}, which lets group or others in; \
         run `chmod 700 {path}` (and check who could have read the keys)"
    )]
    DirectoryMode {
        /// The directory.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// A key file is group- or world-accessible.
    #[error(
        "key file {path} has mode {mode:04o}, which lets group or others read it; \
         run `chmod 600 {path}` (and consider the key exposed: rotate it)"
    )]
    FileMode {
        /// The file.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// A key path is a symlink, directory or other non-regular file.
    #[error("key file {path} is not a regular file ({kind}); replace it with the key file itself")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A key file's content is not a WireGuard private key.
    #[error(
        "key file {path} does not hold a WireGuard private key ({reason}); it must hold one \
         base64 key as `wg genkey` prints it: restore the right file, or move this one away \
         to have a new key generated (the node's public key will change)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, without the content.
        reason: &'static str,
    },
    /// Reading a key file failed.
    #[error("reading key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Writing, linking, renaming or removing a key file failed.
    #[error(
        "writing key file {path}: {source}; check free space and that {path} is on a writable filesystem"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `activate` was called with no staged key.
    #[error("no staged key in {dir} to activate; stage one first (rotation phase Prepare)")]
    NothingStaged {
        /// The key directory.
        dir: PathBuf,
    },
}

/// The node's keys on disk and in memory.
pub struct KeyStore {
    dir: PathBuf,
    active: PrivateKey,
    staged: Option<PrivateKey>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys only; the private ones are not even mentioned.
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("public_key", &self.active.public_key())
            .field("staged_public_key", &self.staged.as_ref().map(PrivateKey::public_key))
            .finish()
    }
}

impl KeyStore {
    /// Opens (creating if missing) the key directory and the active key; a
    /// staged key left by an unfinished rotation is loaded too.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let dir = dir.as_ref().to_path_buf();
        ensure_private_dir(&dir)?;
        scrub_leftovers(&dir)?;
        let active_path = dir.join(ACTIVE_FILE);
        let active = match read_key(&active_path)? {
            Some(key) => key,
            None => create_key(&active_path)?,
        };
        let staged = read_key(&dir.join(STAGED_FILE))?;
        Ok(KeyStore { dir, active, staged })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active private key.
    pub fn active(&self) -> &PrivateKey {
        &self.active
    }

    /// The active public key.
    pub fn public_key(&self) -> PublicKey {
        self.active.public_key()
    }

    /// The staged private key, if a rotation is under way.
    pub fn staged(&self) -> Option<&PrivateKey> {
        self.staged.as_ref()
    }

    /// The staged public key, if a rotation is under way.
    pub fn staged_public_key(&self) -> Option<PublicKey> {
        self.staged.as_ref().map(PrivateKey::public_key)
    }

    /// Stages a new key (rotation Prepare) and returns its public key. A key
    /// already staged is kept and returned, so a repeated Prepare (or one
    /// after a restart) publishes the same key.
    pub fn stage(&mut self) -> Result<PublicKey, KeyStoreError> {
        if let Some(staged) = &self.staged {
            return Ok(staged.public_key());
        }
        let key = create_key(&self.dir.join(STAGED_FILE))?;
        let public = key.public_key();
        self.staged = Some(key);
        Ok(public)
    }

    /// Makes the staged key the active one (rotation Activate) and returns
    /// its public key. The switch on disk is one atomic rename; the old key
    /// file is overwritten with zeros and removed, and the old key zeroized
    /// in memory.
    pub fn activate(&mut self) -> Result<PublicKey, KeyStoreError> {
        if self.staged.is_none() {
            return Err(KeyStoreError::NothingStaged { dir: self.dir.clone() });
        }
        let active_path = self.dir.join(ACTIVE_FILE);
        let staged_path = self.dir.join(STAGED_FILE);
        let retired_path = self.dir.join(RETIRED_FILE);
        // Keep a second name on the old key so it can be scrubbed after the
        // rename replaced `private.key`; a crash in between leaves it for the
        // next `open` to scrub, never a node without an active key.
        scrub(&retired_path)?;
        fs::hard_link(&active_path, &retired_path)
            .map_err(|source| KeyStoreError::Write { path: retired_path.clone(), source })?;
        fs::rename(&staged_path, &active_path)
            .map_err(|source| KeyStoreError::Write { path: active_path.clone(), source })?;
        sync_dir(&self.dir)?;
        scrub(&retired_path)?;
        // The old key drops here and zeroizes itself.
        self.active = self.staged.take().expect("checked above");
        Ok(self.active.public_key())
    }

    /// Drops the staged key (rotation rollback): its file is overwritten with
    /// zeros and removed. Nothing staged is not an error.
    pub fn discard_staged(&mut self) -> Result<(), KeyStoreError> {
        scrub(&self.dir.join(STAGED_FILE))?;
        sync_dir(&self.dir)?;
        self.staged = None;
        Ok(())
    }
}

/// Creates `dir` (0700) if missing; refuses one that is not private.
fn ensure_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source }),
        Err(source) => Err(KeyStoreError::Directory { path: dir.to_path_buf(), source }),
        Ok(meta) if !meta.is_dir() => Err(KeyStoreError::NotADirectory { path: dir.to_path_buf() }),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 == 0 {
                return Ok(());
            }
            // A directory without a single file has held no key anyone could
            // have read: it is what the kubelet makes of a DirectoryOrCreate
            // hostPath (0755) on a node's first start, perhaps with the
            // daemon's own state directory in it already. Tighten it. One
            // with files in it is the operator's to look at.
            let entries = fs::read_dir(dir)
                .map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source })?;
            let mut holds_files = false;
            for entry in entries {
                let entry =
                    entry.map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source })?;
                let file_type = entry
                    .file_type()
                    .map_err(|source| KeyStoreError::Directory { path: entry.path(), source })?;
                holds_files |= !file_type.is_dir();
            }
            if holds_files {
                return Err(KeyStoreError::DirectoryMode { path: dir.to_path_buf(), mode });
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source })
        }
    }
}

/// Reads a key file: `None` if it does not exist, an error if it is not a
/// private, regular file holding one base64 key.
fn read_key(path: &Path) -> Result<Option<PrivateKey>, KeyStoreError> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyStoreError::Read { path: path.to_path_buf(), source }),
        Ok(meta) => meta,
    };
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_symlink() {
            "a symlink"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_socket() || file_type.is_fifo() {
            "a socket or fifo"
        } else {
            "a device"
        };
        return Err(KeyStoreError::NotAFile { path: path.to_path_buf(), kind });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::FileMode { path: path.to_path_buf(), mode });
    }
    let read_err = |source| KeyStoreError::Read { path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().read(true).custom_flags(o_nofollow()).open(path).map_err(read_err)?;
    // A key file is 44 characters and a newline; anything much longer is
    // not one, and is not worth reading into memory.
    let mut content = Zeroizing::new(Vec::with_capacity(64));
    (&mut file).take(256).read_to_end(&mut content).map_err(read_err)?;
    PrivateKey::from_base64(&content)
        .map(Some)
        .map_err(|reason| KeyStoreError::Malformed { path: path.to_path_buf(), reason })
}

/// `O_NOFOLLOW`: the metadata check above already refused symlinks; this
/// closes the window between that check and the open.
fn o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Generates a key and writes it to `path`, which must not exist yet. If
/// another writer won the race, its key is read back instead.
fn create_key(path: &Path) -> Result<PrivateKey, KeyStoreError> {
    let key = PrivateKey::generate();
    let dir = path.parent().expect("key paths are inside the key directory");
    let name = path.file_name().expect("key paths have a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyStoreError::Write { path, source }
    };
    scrub(&tmp)?;
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(write_err(&tmp))?;
    let mut text = key.to_base64();
    text.push('\n');
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(write_err(&tmp))?;
    drop(file);
    // link(2) never replaces an existing file: "create if missing", atomically.
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp).map_err(write_err(&tmp))?;
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| KeyStoreError::Write { path: path.to_path_buf(), source: e })
        }
        Err(source) => Err(KeyStoreError::Write { path: path.to_path_buf(), source }),
    }
}

/// Overwrites a key file with zeros and removes it; a missing file is fine.
fn scrub(path: &Path) -> Result<(), KeyStoreError> {
    let write_err = |source| KeyStoreError::Write { path: path.to_path_buf(), source };
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(write_err(source)),
        Ok(meta) => meta,
    };
    if meta.is_file() {
        let mut file =
            OpenOptions::new().write(true).custom_flags(o_nofollow()).open(path).map_err(write_err)?;
        let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0).min(4096)];
        file.write_all(&zeros).and_then(|()| file.sync_all()).map_err(write_err)?;
    }
    fs::remove_file(path).map_err(write_err)
}

/// `EBUSY`: removing a directory that is a mount point.
const EBUSY: i32 = 16;

/// Removes every key file of the store in `dir` (active, staged, retired,
/// half-written temps), each overwritten with zeros first, and then `dir`
/// itself if that left it empty (removing vpblu from a node). How many key
/// files there were; a missing `dir` holds none.
pub fn remove_all(dir: &Path) -> Result<usize, KeyStoreError> {
    if !dir.exists() {
        return Ok(0);
    }
    let present = |name: &str| fs::symlink_metadata(dir.join(name)).is_ok();
    let keys = [ACTIVE_FILE, STAGED_FILE, RETIRED_FILE].into_iter().filter(|name| present(name)).count();
    scrub_leftovers(dir)?;
    scrub(&dir.join(STAGED_FILE))?;
    scrub(&dir.join(ACTIVE_FILE))?;
    match fs::remove_dir(dir) {
        // Not empty (not ours alone), or a mount point (the DaemonSet's
        // hostPath, EBUSY): it stays, without our files.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty || e.raw_os_error() == Some(EBUSY) => Ok(keys),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(KeyStoreError::Directory { path: dir.to_path_buf(), source: e })
        }
        _ => Ok(keys),
    }
}

/// Scrubs what a crash may have left: a retired key, half-written temps.
fn scrub_leftovers(dir: &Path) -> Result<(), KeyStoreError> {
    scrub(&dir.join(RETIRED_FILE))?;
    let entries =
        fs::read_dir(dir).map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| KeyStoreError::Directory { path: dir.to_path_buf(), source })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            scrub(&entry.path())?;
        }
    }
    Ok(())
}

/// Makes renames and links in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), KeyStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeyStoreError::Write { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
