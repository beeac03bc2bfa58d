use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn file_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

/// A store in a fresh `keys` directory under a temp dir (kept alive).
fn store() -> (tempfile::TempDir, PathBuf, KeyStore) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let store = KeyStore::open(&dir).unwrap();
    (tmp, dir, store)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn public_key_matches_rfc7748_vector() {
    // RFC 7748 §6.1, Alice.
    let mut bytes = Zeroizing::new([0u8; 32]);
    let alice = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&alice[2 * i..2 * i + 2], 16).unwrap();
    }
    let key = PrivateKey::from_bytes(&bytes);
    assert_eq!(
        hex(key.public_key().as_bytes()),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
}

#[test]
fn generated_keys_are_clamped_and_distinct() {
    let a = PrivateKey::generate();
    let b = PrivateKey::generate();
    for key in [&a, &b] {
        let bytes = key.secret_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
    }
    assert_ne!(a.public_key(), b.public_key());
}

#[test]
fn open_creates_a_private_dir_and_a_0600_key_file_like_wg_genkey() {
    let (_tmp, dir, store) = store();
    assert_eq!(mode(&dir), 0o700);
    let path = dir.join(ACTIVE_FILE);
    assert_eq!(mode(&path), 0o600);
    let text = file_text(&path);
    assert_eq!(text.len(), 45, "44 base64 characters and a newline");
    assert!(text.ends_with('\n'));
    let parsed = PrivateKey::from_base64(text.as_bytes()).unwrap();
    assert_eq!(parsed.public_key(), store.public_key());
    assert!(store.staged().is_none());
    // Nothing else was left in the directory.
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [ACTIVE_FILE]);
}

#[test]
fn reopening_reuses_the_key() {
    let (_tmp, dir, store) = store();
    let before = fs::read(dir.join(ACTIVE_FILE)).unwrap();
    let public = store.public_key();
    drop(store);
    let again = KeyStore::open(&dir).unwrap();
    assert_eq!(again.public_key(), public);
    assert_eq!(fs::read(dir.join(ACTIVE_FILE)).unwrap(), before);
}

#[test]
fn an_existing_dir_that_is_private_is_used_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    set_mode(tmp.path(), 0o700);
    let store = KeyStore::open(tmp.path()).unwrap();
    assert!(tmp.path().join(ACTIVE_FILE).exists());
    assert_eq!(store.dir(), tmp.path());
}

#[test]
fn a_key_written_by_wg_genkey_is_accepted_with_or_without_newline() {
    let tmp = tempfile::tempdir().unwrap();
    set_mode(tmp.path(), 0o700);
    let path = tmp.path().join(ACTIVE_FILE);
    // `wg genkey` output for the RFC 7748 Alice key, and its `wg pubkey`.
    let private = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    let public = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    for content in [format!("{private}\n"), private.to_owned(), format!("  {private} \n\n")] {
        fs::write(&path, &content).unwrap();
        set_mode(&path, 0o600);
        let store = KeyStore::open(tmp.path()).unwrap();
        assert_eq!(store.public_key().to_base64(), public);
        // Reused verbatim, not rewritten.
        assert_eq!(file_text(&path), content);
    }
}

#[test]
fn a_group_or_world_readable_key_file_is_refused_with_the_fix() {
    for bad in [0o640, 0o604, 0o660, 0o644, 0o610] {
        let (_tmp, dir, store) = store();
        drop(store);
        let path = dir.join(ACTIVE_FILE);
        set_mode(&path, bad);
        let err = KeyStore::open(&dir).unwrap_err();
        assert!(matches!(err, KeyStoreError::FileMode { mode, .. } if mode == bad), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("{bad:04o}")), "{text}");
        assert!(text.contains(&format!("chmod 600 {}", path.display())), "{text}");
    }
}

#[test]
fn a_staged_key_file_with_a_loose_mode_is_refused_too() {
    let (_tmp, dir, mut store) = store();
    store.stage().unwrap();
    drop(store);
    let path = dir.join(STAGED_FILE);
    set_mode(&path, 0o644);
    let err = KeyStore::open(&dir).unwrap_err();
    assert!(err.to_string().contains(&format!("chmod 600 {}", path.display())), "{err}");
}

#[test]
fn a_dir_without_files_with_a_loose_mode_is_tightened_and_used() {
    // What the kubelet makes of a DirectoryOrCreate hostPath: 0755, empty.
    for loose in [0o755, 0o777, 0o750] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        fs::create_dir(&dir).unwrap();
        // The daemon's state directory may be there already.
        fs::create_dir(dir.join("state")).unwrap();
        set_mode(&dir, loose);
        let store = KeyStore::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(ACTIVE_FILE)), 0o600);
        drop(store);
    }
}

#[test]
fn a_group_or_world_accessible_dir_is_refused_with_the_fix() {
    for bad in [0o750, 0o705, 0o755, 0o777, 0o710] {
        let (_tmp, dir, store) = store();
        drop(store);
        set_mode(&dir, bad);
        let err = KeyStore::open(&dir).unwrap_err();
        assert!(matches!(err, KeyStoreError::DirectoryMode { mode, .. } if mode == bad), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("{bad:04o}")), "{text}");
        assert!(text.contains(&format!("chmod 700 {}", dir.display())), "{text}");
    }
}

#[test]
fn a_dir_path_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("keys");
    fs::write(&path, "x").unwrap();
    let err = KeyStore::open(&path).unwrap_err();
    assert!(matches!(err, KeyStoreError::NotADirectory { .. }), "{err}");
}

#[test]
fn malformed_key_files_are_refused_without_echoing_them() {
    let cases: [(&str, &[u8]); 6] = [
        ("empty", b""),
        ("whitespace", b"  \n"),
        ("not base64", b"this is certainly not a wireguard private key!!\n"),
        ("44 chars, bad alphabet", b"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC*=\n"),
        ("16 bytes", b"AAECAwQFBgcICQoLDA0ODw==\n"),
        ("64 bytes", &[b'A'; 88]),
    ];
    for (what, content) in cases {
        let (_tmp, dir, store) = store();
        drop(store);
        let path = dir.join(ACTIVE_FILE);
        fs::write(&path, content).unwrap();
        let err = KeyStore::open(&dir).unwrap_err();
        assert!(matches!(err, KeyStoreError::Malformed { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{what}: {text}");
        let content = String::from_utf8_lossy(content);
        if !content.trim().is_empty() {
            assert!(!text.contains(content.trim()), "{what}: error repeats the content: {text}");
        }
        // The bad file is left for the operator, not replaced.
        assert_eq!(fs::read(&path).unwrap(), content.as_bytes(), "{what}");
    }
}

#[test]
fn a_symlinked_key_file_is_refused() {
    let (tmp, dir, store) = store();
    drop(store);
    let elsewhere = tmp.path().join("elsewhere.key");
    fs::rename(dir.join(ACTIVE_FILE), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join(ACTIVE_FILE)).unwrap();
    let err = KeyStore::open(&dir).unwrap_err();
    assert!(matches!(err, KeyStoreError::NotAFile { kind: "a symlink", .. }), "{err}");
}

#[test]
fn stage_writes_a_second_private_key_and_is_idempotent() {
    let (_tmp, dir, mut store) = store();
    let active = store.public_key();
    let staged = store.stage().unwrap();
    assert_ne!(staged, active);
    assert_eq!(store.staged_public_key(), Some(staged));
    assert_eq!(store.public_key(), active, "staging does not switch");
    let path = dir.join(STAGED_FILE);
    assert_eq!(mode(&path), 0o600);
    let parsed = PrivateKey::from_base64(file_text(&path).as_bytes()).unwrap();
    assert_eq!(parsed.public_key(), staged);
    // A repeated Prepare, and one after a restart, publish the same key.
    assert_eq!(store.stage().unwrap(), staged);
    drop(store);
    let mut again = KeyStore::open(&dir).unwrap();
    assert_eq!(again.public_key(), active);
    assert_eq!(again.staged_public_key(), Some(staged));
    assert_eq!(again.stage().unwrap(), staged);
}

#[test]
fn activate_switches_to_the_staged_key_and_removes_the_old_one() {
    let (_tmp, dir, mut store) = store();
    let old_text = file_text(&dir.join(ACTIVE_FILE));
    let staged = store.stage().unwrap();
    let staged_text = file_text(&dir.join(STAGED_FILE));
    assert_eq!(store.activate().unwrap(), staged);
    assert_eq!(store.public_key(), staged);
    assert!(store.staged().is_none());
    assert_eq!(file_text(&dir.join(ACTIVE_FILE)), staged_text);
    assert_eq!(mode(&dir.join(ACTIVE_FILE)), 0o600);
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [ACTIVE_FILE], "the staged and retired files are gone");
    // The old key is nowhere in the directory any more.
    for entry in fs::read_dir(&dir).unwrap() {
        assert!(!fs::read_to_string(entry.unwrap().path()).unwrap().contains(old_text.trim()));
    }
    drop(store);
    let again = KeyStore::open(&dir).unwrap();
    assert_eq!(again.public_key(), staged);
    assert!(again.staged().is_none());
}

#[test]
fn activate_without_a_staged_key_is_an_error_and_changes_nothing() {
    let (_tmp, dir, mut store) = store();
    let before = store.public_key();
    let err = store.activate().unwrap_err();
    assert!(matches!(err, KeyStoreError::NothingStaged { .. }), "{err}");
    assert!(err.to_string().contains(&dir.display().to_string()));
    assert_eq!(store.public_key(), before);
}

#[test]
fn discard_staged_removes_the_staged_key() {
    let (_tmp, dir, mut store) = store();
    let active = store.public_key();
    let staged = store.stage().unwrap();
    store.discard_staged().unwrap();
    assert!(store.staged().is_none());
    assert!(!dir.join(STAGED_FILE).exists());
    assert_eq!(store.public_key(), active);
    store.discard_staged().unwrap(); // nothing staged: still fine
    // A new Prepare makes a new key, not the discarded one.
    assert_ne!(store.stage().unwrap(), staged);
    drop(store);
    assert_eq!(KeyStore::open(&dir).unwrap().public_key(), active);
}

#[test]
fn leftovers_of_a_crash_are_scrubbed_on_open() {
    let (_tmp, dir, store) = store();
    let public = store.public_key();
    drop(store);
    for name in [RETIRED_FILE, ".private.key.4242.tmp", ".staged.key.7.tmp"] {
        let path = dir.join(name);
        fs::write(&path, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").unwrap();
        set_mode(&path, 0o600);
    }
    let store = KeyStore::open(&dir).unwrap();
    assert_eq!(store.public_key(), public);
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [ACTIVE_FILE]);
}

#[test]
fn no_formatting_of_a_key_bearing_type_shows_the_private_key() {
    let (_tmp, dir, mut store) = store();
    store.stage().unwrap();
    let secrets: Vec<String> =
        [ACTIVE_FILE, STAGED_FILE].iter().map(|name| file_text(&dir.join(name)).trim().to_owned()).collect();
    let key = PrivateKey::generate();
    let key_b64 = key.to_base64().to_string();
    let key_hex = hex(key.secret_bytes());
    assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
    assert_eq!(format!("{key:#?}"), "PrivateKey(<redacted>)");
    let mut shown = vec![
        format!("{:?}", store),
        format!("{:#?}", store),
        format!("{:?}", store.active()),
        format!("{:?}", store.staged()),
        format!("{:?}", Some(&key)),
    ];
    // Errors from every path that touches a key file.
    set_mode(&dir.join(STAGED_FILE), 0o644);
    let err = KeyStore::open(&dir).unwrap_err();
    shown.push(format!("{err} {err:?}"));
    fs::write(dir.join(STAGED_FILE), format!("{}{}", secrets[1], secrets[1])).unwrap();
    set_mode(&dir.join(STAGED_FILE), 0o600);
    let err = KeyStore::open(&dir).unwrap_err();
    shown.push(format!("{err} {err:?}"));
    for text in &shown {
        for secret in secrets.iter().chain([&key_b64]) {
            assert!(!text.contains(secret.as_str()), "{text} shows a private key");
            assert!(!text.contains(&secret[..12]), "{text} shows part of a private key");
        }
        assert!(!text.contains(&key_hex), "{text} shows a private key in hex");
    }
    // The public keys are what Debug shows instead.
    assert!(shown[0].contains(&store.public_key().to_base64()));
}

#[test]
fn removal_scrubs_every_key_file_and_the_directory_when_it_held_only_those() {
    let (_tmp, dir, mut store) = store();
    store.stage().unwrap();
    drop(store);
    fs::write(dir.join(".private.key.123.tmp"), b"half").unwrap();
    assert_eq!(remove_all(&dir).unwrap(), 2, "active and staged");
    assert!(!dir.exists(), "the directory held only the store: gone");
    assert_eq!(remove_all(&dir).unwrap(), 0, "nothing left to remove is no error");
}

#[test]
fn removal_leaves_files_that_are_not_the_stores_and_their_directory() {
    let (_tmp, dir, store) = store();
    drop(store);
    fs::create_dir(dir.join("state")).unwrap();
    assert_eq!(remove_all(&dir).unwrap(), 1);
    assert!(!dir.join(ACTIVE_FILE).exists());
    assert!(dir.join("state").is_dir(), "not the store's: kept, and so is the directory");
}
