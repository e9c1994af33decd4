//! Unpacking an uploaded probing-set zip into a folder `probe::scan` can register, refusing what
//! could harm the server: entries that leave the folder (`../`, absolute paths), symbolic links,
//! encrypted entries, too many entries, and zip bombs (declared sizes over the limit, entries
//! that expand far more than images do, and entries that unpack to more than they declare, all
//! counted while extracting). Only images and their `.txt` description sidecars are kept.

use super::UploadError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What an archive may hold and unpack to (the `uploads` section of the config).
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    pub max_files: u64,
    pub max_unpacked_bytes: u64,
    pub max_ratio: u64,
}

/// An entry may expand this much before its ratio is looked at (tiny files compress oddly).
const RATIO_GRACE_BYTES: u64 = 1 << 20;

/// What was kept and what was left out.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Unpacked {
    pub images: u64,
    pub descriptions: u64,
    /// Entries that are neither images nor descriptions (and system clutter such as `__MACOSX/`).
    pub skipped: u64,
    pub bytes: u64,
}

enum Keep {
    Image,
    Description,
    Skip,
}

fn keep(rel: &str) -> Keep {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    // macOS resource forks and hidden files carry image extensions without being images.
    if rel.split('/').any(|c| c.starts_with('.') || c == "__MACOSX") {
        return Keep::Skip;
    }
    let ext = Path::new(file).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if dissect::probe::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Keep::Image
    } else if ext == "txt" {
        Keep::Description
    } else {
        Keep::Skip
    }
}

/// The entry's path inside the set, with `/` separators; an error for any name that could leave
/// the folder. Backslashes count as separators (archives made on Windows).
fn safe_relative(name: &str) -> Result<Option<String>, UploadError> {
    let quoted = quote(name);
    let bad = |why: &str| {
        UploadError::Invalid(format!("zip entry `{quoted}` {why}; entries must stay inside the set's folder"))
    };
    let unified = name.replace('\\', "/");
    if unified.starts_with('/') || unified.contains('\0') {
        return Err(bad("is an absolute path"));
    }
    if unified.len() >= 2 && unified.as_bytes()[1] == b':' {
        return Err(bad("names a drive"));
    }
    let mut parts = Vec::new();
    for c in unified.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad("climbs out with `..`")),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// An entry's name as an error quotes it (a name may be 64 KiB long).
fn quote(name: &str) -> String {
    dissect::error::excerpt(name, 120)
}

fn too_large(key: &str, what: String) -> UploadError {
    UploadError::TooLarge(format!("{what} (limit `uploads.{key}`)"))
}

/// Unpacks `zip` into `dest` (created; must not exist). On error `dest` may hold part of the
/// archive: the caller removes it.
pub fn unpack(zip: &Path, dest: &Path, limits: ZipLimits) -> Result<Unpacked, UploadError> {
    let file = File::open(zip).map_err(|e| UploadError::Internal(format!("reading the upload: {e}")))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| UploadError::Invalid(format!("not a readable zip archive: {e}")))?;
    if archive.len() as u64 > limits.max_files {
        return Err(too_large(
            "max_files",
            format!("the zip holds {} entries, more than {}", archive.len(), limits.max_files),
        ));
    }

    // First pass, on the central directory only: refuse before writing anything when the
    // declared sizes already break a limit.
    let mut declared_total: u64 = 0;
    let mut any_image = false;
    for i in 0..archive.len() {
        let entry =
            archive.by_index_raw(i).map_err(|e| UploadError::Invalid(format!("zip entry #{i} cannot be read: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned());
        let quoted = quote(&name);
        let rel = safe_relative(&name)?;
        if entry.is_symlink() {
            return Err(UploadError::Invalid(format!(
                "zip entry `{quoted}` is a symbolic link; a probing-set zip holds plain files and folders only"
            )));
        }
        let Some(rel) = rel else { continue };
        if entry.is_dir() || matches!(keep(&rel), Keep::Skip) {
            continue;
        }
        if entry.encrypted() {
            return Err(UploadError::Invalid(format!("zip entry `{quoted}` is encrypted; upload an unencrypted zip")));
        }
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size.saturating_sub(RATIO_GRACE_BYTES) > packed.saturating_mul(limits.max_ratio) {
            return Err(UploadError::Invalid(format!(
                "zip entry `{quoted}` expands from {packed} to {size} bytes, more than {}× (limit `uploads.max_ratio`): \
                 images hardly compress, so this looks like a zip bomb",
                limits.max_ratio
            )));
        }
        declared_total = declared_total.saturating_add(size);
        if declared_total > limits.max_unpacked_bytes {
            return Err(too_large(
                "max_unpacked_bytes",
                format!("the zip unpacks to more than {} bytes", limits.max_unpacked_bytes),
            ));
        }
        any_image |= matches!(keep(&rel), Keep::Image);
    }
    if !any_image {
        return Err(UploadError::Invalid(format!(
            "the zip holds no image (accepted extensions: {})",
            dissect::probe::IMAGE_EXTENSIONS.join(", ")
        )));
    }

    // Second pass: extract, trusting no declared size: each entry is cut off one byte past what
    // it declared, and the total is counted from the bytes actually written.
    std::fs::create_dir_all(dest).map_err(|e| UploadError::Internal(format!("creating {}: {e}", dest.display())))?;
    let mut out = Unpacked::default();
    for i in 0..archive.len() {
        let entry =
            archive.by_index(i).map_err(|e| UploadError::Invalid(format!("zip entry #{i} cannot be read: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned());
        let quoted = quote(&name);
        let Some(rel) = safe_relative(&name)? else { continue };
        if entry.is_dir() {
            continue;
        }
        let kind = keep(&rel);
        if matches!(kind, Keep::Skip) {
            out.skipped += 1;
            continue;
        }
        let declared = entry.size();
        let target: PathBuf = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| UploadError::Internal(format!("creating {}: {e}", parent.display())))?;
        }
        let mut file = OpenOptions::new().write(true).create_new(true).open(&target).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => UploadError::Invalid(format!("zip entry `{quoted}` appears twice")),
            _ => UploadError::Internal(format!("writing {}: {e}", target.display())),
        })?;
        let mut limited = entry.take(declared.saturating_add(1));
        let mut buf = vec![0u8; 64 << 10];
        let mut written: u64 = 0;
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| UploadError::Invalid(format!("zip entry `{quoted}` is corrupt: {e}")))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > declared {
                return Err(UploadError::Invalid(format!(
                    "zip entry `{quoted}` unpacks to more than the {declared} bytes it declares: the archive is corrupt or a zip bomb"
                )));
            }
            if out.bytes + written > limits.max_unpacked_bytes {
                return Err(too_large(
                    "max_unpacked_bytes",
                    format!("the zip unpacks to more than {} bytes", limits.max_unpacked_bytes),
                ));
            }
            file.write_all(&buf[..n])
                .map_err(|e| UploadError::Internal(format!("writing {}: {e}", target.display())))?;
        }
        if written < declared {
            return Err(UploadError::Invalid(format!(
                "zip entry `{quoted}` is truncated ({written} of {declared} bytes)"
            )));
        }
        out.bytes += written;
        match kind {
            Keep::Image => out.images += 1,
            _ => out.descriptions += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], zip::CompressionMethod)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes, method) in entries {
            w.start_file(*name, SimpleFileOptions::default().compression_method(*method)).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Every path under `dir`, refusing links and anything that is not a plain file or folder.
    fn walk(dir: &Path, files: &mut Vec<(PathBuf, u64)>) -> Result<(), String> {
        for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                walk(&entry.path(), files)?;
            } else if kind.is_file() {
                files.push((entry.path(), entry.metadata().map_err(|e| e.to_string())?.len()));
            } else {
                return Err(format!("{} is neither a file nor a folder", entry.path().display()));
            }
        }
        Ok(())
    }

    /// Found by `fuzz_zips`: an entry name (up to 64 KiB) came back whole in the error.
    #[test]
    fn errors_quote_entry_names_within_bounds() {
        let root = tempfile::tempdir().unwrap();
        let zip_path = root.path().join("upload.zip");
        let name = format!("../{}.png", " ".repeat(5000));
        std::fs::write(&zip_path, zip_of(&[(name.as_str(), b"x", zip::CompressionMethod::Stored)])).unwrap();
        let dest = root.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let limits = ZipLimits { max_files: 16, max_unpacked_bytes: 1 << 20, max_ratio: 100 };
        let e = unpack(&zip_path, &dest, limits).unwrap_err().to_string();
        assert!(
            e.len() < 300 && e.contains("zip entry `../") && e.contains("stay inside"),
            "{} bytes: {e:.300}",
            e.len()
        );
    }

    /// Fuzz: mutated zips (stored and deflated entries, sidecars, nested folders) never panic
    /// the unpacker; what it writes stays inside the folder, holds plain files only, and keeps
    /// to the limits; what it refuses is said in a bounded message.
    #[test]
    fn fuzz_zips() {
        use zip::CompressionMethod::{Deflated, Stored};
        let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
        let seeds = vec![
            zip_of(&[
                ("cats/a.png", png, Stored),
                ("cats/a.txt", b"a cat", Stored),
                ("b.jpg", b"\xff\xd8\xff", Deflated),
            ]),
            zip_of(&[("x/y/z.png", &[7u8; 300], Deflated), ("__MACOSX/._z.png", b"junk", Stored)]),
        ];
        let dictionary: [&[u8]; 8] =
            [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"../", b"/etc/", b"\\", b".png", b"\xff\xff\xff\x7f"];
        let limits = ZipLimits { max_files: 16, max_unpacked_bytes: 1 << 20, max_ratio: 100 };
        let root = tempfile::tempdir().unwrap();
        let (zip_path, mut n) = (root.path().join("upload.zip"), 0);
        dissect::fuzz::run("zips", &seeds, &dictionary, dissect::fuzz::DEFAULT_ITERATIONS / 3, |bytes| {
            n += 1;
            std::fs::write(&zip_path, bytes).unwrap();
            let dest = root.path().join(format!("out{n}"));
            std::fs::create_dir(&dest).unwrap();
            let outcome = match unpack(&zip_path, &dest, limits) {
                Ok(_) => {
                    let mut files = Vec::new();
                    walk(&dest, &mut files).and_then(|()| {
                        let total: u64 = files.iter().map(|(_, len)| len).sum();
                        if files.len() as u64 > limits.max_files || total > limits.max_unpacked_bytes {
                            return Err(format!("{} files, {total} bytes written past the limits", files.len()));
                        }
                        Ok(())
                    })
                }
                Err(e) => dissect::fuzz::bounded_message(&e.to_string(), 400),
            };
            // Nothing was written outside `dest`: the folder holds only the zip and the outputs.
            let stray = std::fs::read_dir(root.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|name| name != "upload.zip" && !name.starts_with("out"));
            std::fs::remove_dir_all(&dest).unwrap();
            match stray {
                Some(name) => Err(format!("`{name}` was written outside the folder")),
                None => outcome,
            }
        });
    }
}
