//! The admin secret: `admin.secret` from the config, or one generated at first start. A generated
//! secret is shown once (on stderr, where `make run` prints) and only its SHA-256 digest is kept,
//! in `<data_dir>/admin-secret.sha256` (owner-only). A random 256-bit secret needs no slow hash:
//! its digest gives nothing to guess from. `dnd admin-secret` replaces it with a new one.
//! Earlier versions kept the secret itself in `<data_dir>/admin-secret`; such a file is replaced
//! by the digest at start (the secret is shown once more, and keeps working).

use anyhow::Context;
use std::path::{Path, PathBuf};
use study::tokens::{hash_token, new_token};

/// The digest file.
pub const HASH_FILE: &str = "admin-secret.sha256";
/// The plain-text file of earlier versions.
const PLAIN_FILE: &str = "admin-secret";

/// The digest logins are checked against: of the configured secret, else the stored one, else of
/// a new secret (stored, and shown once).
pub fn load_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(hash_token(configured));
    }
    let path = data_dir.join(HASH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if is_digest(s.trim()) => return Ok(s.trim().to_string()),
        Ok(_) => {
            anyhow::bail!("{} does not hold a SHA-256 digest; run `dnd admin-secret` for a new secret", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let plain = data_dir.join(PLAIN_FILE);
    let (secret, how) = match std::fs::read_to_string(&plain) {
        Ok(s) if s.trim().len() >= 16 => (s.trim().to_string(), "kept in plain text until now; it still works"),
        Ok(_) => anyhow::bail!("{} holds a secret shorter than 16 characters; fix or delete it", plain.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (new_token(), "generated at first start"),
        Err(e) => return Err(e).with_context(|| format!("reading {}", plain.display())),
    };
    let digest = store(data_dir, &secret)?;
    if plain.exists() {
        std::fs::remove_file(&plain).with_context(|| format!("removing {}", plain.display()))?;
    }
    show_once(&secret, how, &path);
    Ok(digest)
}

/// `dnd admin-secret`: a new secret replaces the stored one (the server checks logins against
/// the new one from its next start). Returns the secret, for the caller to show.
pub fn renew(data_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data folder {}", data_dir.display()))?;
    let secret = new_token();
    store(data_dir, &secret)?;
    let plain = data_dir.join(PLAIN_FILE);
    if plain.exists() {
        std::fs::remove_file(&plain).with_context(|| format!("removing {}", plain.display()))?;
    }
    Ok(secret)
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes the digest of `secret` (owner-only, replacing any earlier one atomically).
fn store(data_dir: &Path, secret: &str) -> anyhow::Result<String> {
    let digest = hash_token(secret);
    let path = data_dir.join(HASH_FILE);
    let tmp: PathBuf = data_dir.join(format!("{HASH_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, format!("{digest}\n").as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(digest)
}

/// The one time a secret is shown: on stderr directly, not through the log (whose JSON form may
/// be shipped elsewhere).
fn show_once(secret: &str, how: &str, digest_path: &Path) {
    eprintln!(
        "\nAdmin secret ({how}; shown once, only its digest is kept in {}): {secret}\n\
         Keep it: it logs in at /admin. `dnd admin-secret` makes a new one.\n",
        digest_path.display()
    );
    tracing::info!(path = %digest_path.display(), "admin secret ready (shown once on stderr)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_mode(path: &Path) -> u32 {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path).unwrap().permissions().mode()
        }
        #[cfg(not(unix))]
        0
    }

    #[test]
    fn a_generated_secret_is_kept_only_as_its_digest_and_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let digest = load_or_create("", dir.path()).unwrap();
        assert!(is_digest(&digest));
        // Only the digest is on disk, owner-only, and it is reused.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(HASH_FILE)]);
        assert_eq!(file_mode(&dir.path().join(HASH_FILE)) & 0o077, 0);
        assert_eq!(load_or_create("", dir.path()).unwrap(), digest);
        assert_eq!(load_or_create("configured-secret-123", dir.path()).unwrap(), hash_token("configured-secret-123"));
        // A renewed secret replaces the digest.
        let new = renew(dir.path()).unwrap();
        assert_eq!(load_or_create("", dir.path()).unwrap(), hash_token(&new));
        std::fs::write(dir.path().join(HASH_FILE), "not a digest").unwrap();
        assert!(load_or_create("", dir.path()).unwrap_err().to_string().contains("dnd admin-secret"));
    }

    #[test]
    fn a_plain_text_secret_of_an_earlier_version_becomes_a_digest_and_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let old = "an-old-secret-kept-in-plain-text";
        std::fs::write(dir.path().join(PLAIN_FILE), format!("{old}\n")).unwrap();
        assert_eq!(load_or_create("", dir.path()).unwrap(), hash_token(old));
        assert!(!dir.path().join(PLAIN_FILE).exists());
        assert_eq!(load_or_create("", dir.path()).unwrap(), hash_token(old));
        let short = tempfile::tempdir().unwrap();
        std::fs::write(short.path().join(PLAIN_FILE), "short").unwrap();
        assert!(load_or_create("", short.path()).unwrap_err().to_string().contains("shorter than 16"));
    }
}
