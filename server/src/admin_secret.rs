//! The admin secret: `admin.secret` from the config, or one generated at first start and kept in
//! `<data_dir>/admin-secret` (owner-only permissions) so it survives restarts.

use anyhow::Context;
use std::path::Path;

pub const FILE_NAME: &str = "admin-secret";

/// The configured secret, else the stored one, else a new one written to the data folder.
pub fn load_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => return Ok(s.trim().to_string()),
        Ok(_) => anyhow::bail!("{} holds a secret shorter than 16 characters; fix or delete it", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = study::tokens::new_token();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the admin secret (the admin area's password)");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create("", dir.path()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create("", dir.path()).unwrap(), a);
        assert_eq!(load_or_create("configured-secret-123", dir.path()).unwrap(), "configured-secret-123");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        std::fs::write(dir.path().join(FILE_NAME), "short").unwrap();
        assert!(load_or_create("", dir.path()).unwrap_err().to_string().contains("shorter than 16"));
    }
}
