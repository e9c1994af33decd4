//! Probing sets: a folder of images, found recursively and identified by content hash, so
//! re-registering or renaming loses nothing. Labels come from sub-folder names, descriptions from
//! a sidecar `<stem>.txt`. Unreadable files are not errors: they are listed with their reason.

use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// File extensions taken as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Size limits that keep a hostile or absurd file (decompression bomb) from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_side: u32,
    pub max_pixels: u64,
    pub max_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_side: 16_384, max_pixels: 64_000_000, max_file_bytes: 256 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeImage {
    /// Path relative to the set's root, with `/` separators.
    pub rel_path: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    /// Detected from the content, not the extension (e.g. `png`).
    pub format: String,
    pub bytes: u64,
    /// The name of the folder holding the image, when it is not the root.
    pub label: Option<String>,
    /// First non-empty line of the sidecar `<stem>.txt`, if any.
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFile {
    pub rel_path: String,
    pub code: RejectCode,
    /// Human-readable detail, e.g. "corrupt image header: …".
    pub reason: String,
}

/// Why a file was not taken into a probing set (stored as `rejected_files.reason_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    Empty,
    Corrupt,
    /// The data ends early (a JPEG cut short in a copy or download): decoders fill the rest in.
    Truncated,
    NotImage,
    TooLarge,
    Duplicate,
    IoError,
    /// A symbolic link that leads out of the probing folder (not followed).
    LinkOutside,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Empty => "empty",
            RejectCode::Corrupt => "corrupt",
            RejectCode::Truncated => "truncated",
            RejectCode::NotImage => "not_image",
            RejectCode::TooLarge => "too_large",
            RejectCode::Duplicate => "duplicate",
            RejectCode::IoError => "io_error",
            // The schema's reason codes (migrations/0001) have none closer; the reason says it.
            RejectCode::LinkOutside => "other",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScannedSet {
    pub root: PathBuf,
    /// Sorted by relative path; one entry per distinct content.
    pub images: Vec<ProbeImage>,
    pub rejected: Vec<RejectedFile>,
    /// sha256 over the sorted image hashes: equal for two folders with the same images.
    pub content_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probing folder {0} does not exist or is not a folder")]
    NotAFolder(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("probing folder {root} holds no usable image ({rejected} files rejected; accepted extensions: {exts})")]
    Empty { root: PathBuf, rejected: usize, exts: String },
}

/// Which part of a probing set an image belongs to (docs/method.md, "Splits").
///
/// The held-out fraction of a set is cut in two: the concept pool, which the embedded
/// concept-image source retrieves from in Step 3, and the evaluation split, which no step of the
/// method sees and on which label quality is measured. A neuron's D_probe (and so its D_top) is
/// the probe split only, so its own top images can never come back as its concept images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// D_probe: recorded, ranked, cropped and captioned for D_top.
    Probe,
    /// The pool Step 3 may retrieve concept images from.
    ConceptPool,
    /// Seen by no step of the method; used to measure labels.
    Evaluation,
}

impl Split {
    /// The name used in exports and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Probe => "probe",
            Split::ConceptPool => "concept_pool",
            Split::Evaluation => "evaluation",
        }
    }

    /// The value of `probe_set_images.split`: the database knows only probe and held-out (both
    /// held-out parts are derived again from the hash, seed and fraction the set row keeps).
    pub fn stored_as(self) -> &'static str {
        match self {
            Split::Probe => "probe",
            Split::ConceptPool | Split::Evaluation => "heldout",
        }
    }
}

/// Deterministic split by content hash and seed: the same image always lands on the same side,
/// whatever its path or the order of the folder listing. A fraction `f` of the images is held
/// out; the lower half of it is the evaluation split, the upper half the concept pool.
pub fn split_of(sha256: &str, seed: u64, heldout_fraction: f64) -> Split {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(sha256.as_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    if x >= heldout_fraction {
        Split::Probe
    } else if x < heldout_fraction / 2.0 {
        Split::Evaluation
    } else {
        Split::ConceptPool
    }
}

/// Walks `root` recursively and inspects every image-named file (header only: cheap).
pub fn scan(root: &Path, limits: ImageLimits) -> Result<ScannedSet, ProbeError> {
    if !root.is_dir() {
        return Err(ProbeError::NotAFolder(root.to_path_buf()));
    }
    let root_real = std::fs::canonicalize(root).map_err(|source| ProbeError::Io { path: root.into(), source })?;
    let mut files = Vec::new();
    let mut rejected = Vec::new();
    collect_files(root, &root_real, root, &mut files, &mut rejected)?;
    files.sort();

    let mut images: Vec<ProbeImage> = Vec::new();
    let mut seen = std::collections::HashMap::<String, String>::new();
    for path in files {
        let rel_path = relative(root, &path);
        match inspect(&path, &rel_path, &root_real, limits) {
            Ok(img) => {
                if let Some(first) = seen.get(&img.sha256) {
                    let reason = format!("duplicate content of {first}");
                    rejected.push(RejectedFile { rel_path, code: RejectCode::Duplicate, reason });
                } else {
                    seen.insert(img.sha256.clone(), img.rel_path.clone());
                    images.push(img);
                }
            }
            Err((code, reason)) => rejected.push(RejectedFile { rel_path, code, reason }),
        }
    }
    // Rows of activation files follow this order, and the database gives each image of a set its
    // row by content hash: one canonical order that no renaming or file system listing changes.
    images.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    if images.is_empty() {
        return Err(ProbeError::Empty {
            root: root.to_path_buf(),
            rejected: rejected.len(),
            exts: IMAGE_EXTENSIONS.join(", "),
        });
    }
    let mut hashes: Vec<&str> = images.iter().map(|i| i.sha256.as_str()).collect();
    hashes.sort_unstable();
    let mut h = Sha256::new();
    for s in hashes {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    Ok(ScannedSet { root: root.to_path_buf(), images, rejected, content_hash: hex::encode(h.finalize()) })
}

/// Image-named files below `dir`. A symbolic link is followed only to a file inside the folder
/// (`root_real`, its canonical path); one that leads out is listed in `rejected`, so a folder
/// registered from disk reads nothing outside itself. Links to folders are not followed (inside,
/// their images are found where they are).
fn collect_files(
    root: &Path,
    root_real: &Path,
    dir: &Path,
    out: &mut Vec<PathBuf>,
    rejected: &mut Vec<RejectedFile>,
) -> Result<(), ProbeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProbeError::Io { path: dir.into(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| ProbeError::Io { path: dir.into(), source })?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| ProbeError::Io { path: path.clone(), source })?;
        if ft.is_dir() {
            collect_files(root, root_real, &path, out, rejected)?;
        } else if ft.is_symlink() {
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(root_real) => {
                    if target.is_file() && has_image_extension(&path) {
                        out.push(path);
                    }
                }
                Ok(target) if !(has_image_extension(&path) || target.is_dir()) => {
                    // Not something the scan reads (a sidecar is checked where it is read).
                }
                Ok(_) => rejected.push(RejectedFile {
                    rel_path: relative(root, &path),
                    code: RejectCode::LinkOutside,
                    reason: "symbolic link that leads outside the probing folder (not followed)".into(),
                }),
                Err(e) if has_image_extension(&path) => rejected.push(RejectedFile {
                    rel_path: relative(root, &path),
                    code: RejectCode::IoError,
                    reason: format!("broken symbolic link: {e}"),
                }),
                Err(_) => {}
            }
        } else if has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Reads the file and its image header; `Err` says why the file is rejected.
fn inspect(
    path: &Path,
    rel_path: &str,
    root_real: &Path,
    limits: ImageLimits,
) -> Result<ProbeImage, (RejectCode, String)> {
    let io = |e: std::io::Error| (RejectCode::IoError, format!("cannot read: {e}"));
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() == 0 {
        return Err((RejectCode::Empty, "empty file (0 bytes)".into()));
    }
    if meta.len() > limits.max_file_bytes {
        let reason = format!("file too large ({} bytes; limit {})", meta.len(), limits.max_file_bytes);
        return Err((RejectCode::TooLarge, reason));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let reader = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format().map_err(io)?;
    let format = reader.format().ok_or_else(|| {
        (RejectCode::NotImage, "not an image: the content is not a recognised image format".to_string())
    })?;
    if format_name(format) == "other" {
        let reason = format!("unsupported image format {format:?} (accepted: {})", IMAGE_EXTENSIONS.join(", "));
        return Err((RejectCode::NotImage, reason));
    }
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(&bytes) {
        let reason = "truncated JPEG: the data ends before the image does (cut short in a copy or download?)";
        return Err((RejectCode::Truncated, reason.into()));
    }
    let (width, height) =
        reader.into_dimensions().map_err(|e| (RejectCode::Corrupt, format!("corrupt image header: {e}")))?;
    check_dimensions(width, height, limits).map_err(|reason| (RejectCode::TooLarge, reason))?;
    let label = Path::new(rel_path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    Ok(ProbeImage {
        rel_path: rel_path.to_string(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        width,
        height,
        format: format_name(format).to_string(),
        bytes: meta.len(),
        label,
        description: sidecar_description(path, root_real),
    })
}

/// Whether a JPEG's data reaches its end-of-image marker. Walks the marker segments (skipping
/// their declared lengths, so an embedded EXIF thumbnail's own end marker is not mistaken for
/// the image's) and the entropy-coded data after each start-of-scan (where a 0xFF byte is
/// always followed by 0x00 or a restart marker). Bytes after the end marker are allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut pos = 2;
    loop {
        // A marker: 0xFF (possibly repeated as fill), then its code.
        if bytes.get(pos) != Some(&0xFF) {
            return false;
        }
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&code) = bytes.get(pos) else { return false };
        pos += 1;
        match code {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(pos..pos + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
            return false;
        };
        if len < 2 || pos + len > bytes.len() {
            return false;
        }
        pos += len;
        if code == 0xDA {
            // Entropy-coded data up to the next marker that is not a restart marker.
            loop {
                let Some(i) = bytes[pos..].iter().position(|&b| b == 0xFF) else { return false };
                pos += i;
                match bytes.get(pos + 1) {
                    None => return false,
                    Some(0x00) | Some(0xD0..=0xD7) => pos += 2,
                    Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Canonical lower-case name of a decodable format (`jpeg`, not the `jpg` extension).
fn format_name(format: image::ImageFormat) -> &'static str {
    use image::ImageFormat as F;
    match format {
        F::Png => "png",
        F::Jpeg => "jpeg",
        F::WebP => "webp",
        F::Gif => "gif",
        F::Bmp => "bmp",
        F::Tiff => "tiff",
        _ => "other",
    }
}

/// Rejects zero-sized and absurdly large images before anything allocates their pixels.
pub fn check_dimensions(width: u32, height: u32, limits: ImageLimits) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("image has no pixels ({width}×{height})"));
    }
    if width > limits.max_side || height > limits.max_side || (width as u64) * (height as u64) > limits.max_pixels {
        return Err(format!(
            "image too large ({width}×{height}; limits {} px per side, {} px in all): possible decompression bomb",
            limits.max_side, limits.max_pixels
        ));
    }
    Ok(())
}

/// The sidecar `<stem>.txt`'s first line; one that is (or leads through) a link out of the
/// folder is not read.
fn sidecar_description(path: &Path, root_real: &Path) -> Option<String> {
    let sidecar = path.with_extension("txt");
    if !std::fs::canonicalize(&sidecar).ok()?.starts_with(root_real) {
        return None;
    }
    let text = std::fs::read_to_string(sidecar).ok()?;
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, x as u8, y as u8]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
        out
    }

    #[test]
    fn a_jpeg_is_complete_only_up_to_its_end_marker() {
        let whole = jpeg(64, 48);
        assert!(jpeg_is_complete(&whole));
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"trailing bytes after the image");
        assert!(jpeg_is_complete(&trailing), "bytes after the end marker are allowed");
        for cut in [whole.len() - 2, whole.len() / 2, whole.len() / 10, 3] {
            assert!(!jpeg_is_complete(&whole[..cut]), "cut at {cut} of {}", whole.len());
        }
        // Real photos of the built-in set (encoders other than ours), whole and cut.
        let folder = crate::assets::assets_dir().join("probe/builtin/skimage");
        for name in ["rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"] {
            let photo = std::fs::read(folder.join(name))
                .unwrap_or_else(|e| panic!("{name} of the built-in set (run scripts/setup.sh): {e}"));
            assert!(jpeg_is_complete(&photo), "{name}");
            assert!(!jpeg_is_complete(&photo[..photo.len() / 2]), "{name} cut in half");
        }
    }

    #[test]
    fn truncated_jpegs_and_links_out_of_the_folder_are_rejected_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        std::fs::create_dir_all(&root).unwrap();
        let whole = jpeg(64, 48);
        std::fs::write(root.join("whole.jpg"), &whole).unwrap();
        std::fs::write(root.join("half.jpg"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(dir.path().join("outside.png"), png(5, 5, 9)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.png"), root.join("link.png")).unwrap();
        std::fs::write(root.join("inside.png"), png(6, 6, 8)).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root.join("inside.png"), root.join("sub/again.png")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("parent")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "a description from outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("inside.txt")).unwrap();

        let set = scan(&root, ImageLimits::default()).unwrap();
        let mut paths: Vec<&str> = set.images.iter().map(|i| i.rel_path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["inside.png", "whole.jpg"]);
        let inside = set.images.iter().find(|i| i.rel_path == "inside.png").unwrap();
        assert_eq!(inside.description, None, "a sidecar linked from outside is not read");
        let reason = |p: &str| set.rejected.iter().find(|r| r.rel_path == p).map(|r| (r.code, r.reason.clone()));
        let (code, why) = reason("half.jpg").unwrap();
        assert_eq!(code, RejectCode::Truncated);
        assert!(why.contains("truncated JPEG"), "{why}");
        let (code, why) = reason("link.png").unwrap();
        assert_eq!(code, RejectCode::LinkOutside);
        assert!(why.contains("outside the probing folder") && !why.contains("outside.png"), "{why}");
        assert_eq!(reason("parent").map(|r| r.0), Some(RejectCode::LinkOutside), "a linked folder outside");
        // A link to a file inside is read (here the same content: a duplicate, not a second image).
        assert_eq!(reason("sub/again.png").map(|r| r.0), Some(RejectCode::Duplicate));
    }

    #[test]
    fn scans_recursively_with_labels_descriptions_and_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("dogs/deep")).unwrap();
        std::fs::write(root.join("dogs/a.png"), png(8, 6, 1)).unwrap();
        std::fs::write(root.join("dogs/a.txt"), "\n  A small dog.  \nsecond line").unwrap();
        std::fs::write(root.join("dogs/deep/b.PNG"), png(4, 4, 2)).unwrap();
        std::fs::write(root.join("top.png"), png(5, 5, 3)).unwrap();
        let mut jpeg = Vec::new();
        image::RgbImage::new(7, 3).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        std::fs::write(root.join("photo.JPG"), jpeg).unwrap();
        std::fs::write(root.join("copy.png"), png(5, 5, 3)).unwrap();
        std::fs::write(root.join("empty.jpg"), b"").unwrap();
        std::fs::write(root.join("notes.jpg"), b"this is text, not a jpeg").unwrap();
        std::fs::write(root.join("readme.md"), b"ignored").unwrap();
        let mut truncated = png(8, 8, 4);
        truncated.truncate(10);
        std::fs::write(root.join("trunc.png"), truncated).unwrap();

        let set = scan(root, ImageLimits::default()).unwrap();
        let mut paths: Vec<_> = set.images.iter().map(|i| i.rel_path.as_str()).collect();
        assert!(set.images.windows(2).all(|w| w[0].sha256 < w[1].sha256), "images come in content-hash order");
        paths.sort_unstable();
        assert_eq!(paths, ["copy.png", "dogs/a.png", "dogs/deep/b.PNG", "photo.JPG"]);
        let at = |p: &str| set.images.iter().find(|i| i.rel_path == p).unwrap();
        assert_eq!(at("photo.JPG").format, "jpeg", "canonical name, as the database expects");
        let a = at("dogs/a.png");
        assert_eq!((a.width, a.height, a.format.as_str()), (8, 6, "png"));
        assert_eq!(a.label.as_deref(), Some("dogs"));
        assert_eq!(a.description.as_deref(), Some("A small dog."));
        assert_eq!(at("dogs/deep/b.PNG").label.as_deref(), Some("deep"));
        assert_eq!(at("copy.png").label, None);

        let reason = |p: &str| set.rejected.iter().find(|r| r.rel_path == p).map(|r| r.reason.clone()).unwrap();
        let code = |p: &str| set.rejected.iter().find(|r| r.rel_path == p).map(|r| r.code).unwrap();
        assert_eq!(
            ["empty.jpg", "notes.jpg", "trunc.png", "top.png"].map(code),
            [RejectCode::Empty, RejectCode::NotImage, RejectCode::Corrupt, RejectCode::Duplicate]
        );
        assert!(reason("empty.jpg").contains("empty file"));
        assert!(reason("notes.jpg").contains("not an image"));
        assert!(reason("trunc.png").contains("corrupt"), "{}", reason("trunc.png"));
        assert!(reason("top.png").contains("duplicate content of copy.png"));
        assert_eq!(set.rejected.len(), 4);
    }

    #[test]
    fn content_hash_ignores_names_and_order() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(d1.path().join("x.png"), png(3, 3, 1)).unwrap();
        std::fs::write(d1.path().join("y.png"), png(3, 3, 2)).unwrap();
        std::fs::write(d2.path().join("renamed-b.png"), png(3, 3, 1)).unwrap();
        std::fs::write(d2.path().join("renamed-a.png"), png(3, 3, 2)).unwrap();
        let (s1, s2) =
            (scan(d1.path(), ImageLimits::default()).unwrap(), scan(d2.path(), ImageLimits::default()).unwrap());
        assert_eq!(s1.content_hash, s2.content_hash);
        std::fs::write(d2.path().join("third.png"), png(3, 3, 9)).unwrap();
        assert_ne!(s1.content_hash, scan(d2.path(), ImageLimits::default()).unwrap().content_hash);
    }

    #[test]
    fn empty_or_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.png"), b"nope").unwrap();
        let e = scan(dir.path(), ImageLimits::default()).unwrap_err().to_string();
        assert!(e.contains("no usable image") && e.contains("1 files rejected"), "{e}");
        let e = scan(&dir.path().join("missing"), ImageLimits::default()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn huge_dimensions_are_rejected_before_decoding() {
        let limits = ImageLimits { max_side: 100, max_pixels: 5_000, max_file_bytes: 1 << 20 };
        assert!(check_dimensions(50, 50, limits).is_ok());
        assert!(check_dimensions(101, 1, limits).unwrap_err().contains("decompression bomb"));
        assert!(check_dimensions(80, 80, limits).is_err());
        assert!(check_dimensions(0, 5, limits).unwrap_err().contains("no pixels"));
    }

    #[test]
    fn split_is_deterministic_and_close_to_the_fraction() {
        let hashes: Vec<String> = (0..2000).map(|i| hex::encode(Sha256::digest(format!("{i}")))).collect();
        let count = |split: Split, seed| hashes.iter().filter(|h| split_of(h, seed, 0.3) == split).count();
        let (pool, eval) = (count(Split::ConceptPool, 7), count(Split::Evaluation, 7));
        assert!((500..700).contains(&(pool + eval)), "{} of 2000 held out", pool + eval);
        assert!((220..380).contains(&pool) && (220..380).contains(&eval), "pool {pool}, evaluation {eval}");
        assert!(hashes.iter().all(|h| split_of(h, 7, 0.3) == split_of(h, 7, 0.3)));
        let held = |seed| hashes.iter().filter(|h| split_of(h, seed, 0.3) != Split::Probe).collect::<Vec<_>>();
        assert_ne!(held(7), held(8));
        assert_eq!(Split::ConceptPool.stored_as(), Split::Evaluation.stored_as());
        assert_eq!(split_of(&hashes[0], 7, 0.0), Split::Probe, "nothing held out at fraction 0");
    }

    /// Fuzz: mutated PNG, JPEG and GIF files through the scan's check of one file and, where
    /// it accepts one, the recording's decoder. Neither panics; an accepted JPEG is whole; a
    /// rejection's reason is bounded; an accepted image decodes or fails with an error.
    #[test]
    fn fuzz_image_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let path = root.join("x.img");
        let mut gif = Vec::new();
        image::RgbImage::from_pixel(5, 3, image::Rgb([9, 8, 7]))
            .write_to(&mut Cursor::new(&mut gif), image::ImageFormat::Gif)
            .unwrap();
        let seeds = vec![png(6, 5, 1), jpeg(9, 7), gif];
        let dictionary: [&[u8]; 8] =
            [b"\xff\xd8", b"\xff\xd9", b"\xff\xda", b"\xff\xc0", b"IHDR", b"IDAT", b"IEND", b"GIF89a"];
        let limits = ImageLimits { max_side: 4096, max_pixels: 1 << 22, max_file_bytes: 1 << 22 };
        crate::fuzz::run("image files", &seeds, &dictionary, crate::fuzz::DEFAULT_ITERATIONS, |bytes| {
            std::fs::write(&path, bytes).unwrap();
            match inspect(&path, "x.img", &root, limits) {
                Ok(img) => {
                    if img.format == "jpeg" && !jpeg_is_complete(bytes) {
                        return Err("a truncated JPEG was accepted".into());
                    }
                    if img.width > limits.max_side || img.height > limits.max_side {
                        return Err(format!("{}×{} passed a {} px limit", img.width, img.height, limits.max_side));
                    }
                    // What recording does with it: decode or fail, never panic.
                    let _ = crate::preprocess::decode_rgb(bytes, &path);
                    Ok(())
                }
                Err((_, reason)) => crate::fuzz::bounded_message(&reason, 400),
            }
        });
    }
}
