//! Uploads through a running `dnd serve`: a zip of the real embedded probing images becomes a
//! registered probing set, a hand-built TorchScript model with its manifest a registered model;
//! oversize bodies, zip bombs, escaping or linked entries, corrupt zips and bad manifests are
//! refused with the reason, and a refused upload leaves nothing on disk.

mod common;

use common::{client, Server};
use reqwest::StatusCode;
use std::io::Write;
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// Small limits, so that each can be crossed quickly.
const MAX_ZIP: u64 = 12 << 20;
const MAX_UNPACKED: u64 = 6 << 20;
const MAX_FILES: u64 = 40;
const MAX_MODEL: u64 = 1 << 20;

/// What only these tests ask of the server.
trait Uploads {
    async fn upload(&self, path: &str, cookie: Option<&str>, parts: &[Part<'_>]) -> (StatusCode, String);
    async fn query_i64(&self, sql: &str) -> i64;
    fn uploaded_files(&self) -> Vec<PathBuf>;
}

/// A server with small upload limits, so that each can be crossed quickly.
async fn start(data: &Path) -> Server {
    let limits = [
        ("DND__UPLOADS__MAX_ZIP_BYTES", MAX_ZIP.to_string()),
        ("DND__UPLOADS__MAX_UNPACKED_BYTES", MAX_UNPACKED.to_string()),
        ("DND__UPLOADS__MAX_FILES", MAX_FILES.to_string()),
        ("DND__UPLOADS__MAX_MODEL_BYTES", MAX_MODEL.to_string()),
    ];
    Server::start_with(data, &limits).await
}

impl Uploads for Server {
    async fn upload(&self, path: &str, cookie: Option<&str>, parts: &[Part<'_>]) -> (StatusCode, String) {
        let (content_type, body) = multipart(parts);
        let mut req = client().post(format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn query_i64(&self, sql: &str) -> i64 {
        common::query_i64(&self.data, sql).await
    }

    /// Everything under the upload folders (staging, probing sets, models).
    fn uploaded_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(e.path());
                if e.path().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for d in ["uploads", "probe_sets", "models"] {
            walk(&self.data.join(d), &mut out);
        }
        out
    }
}

enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, Vec<u8>),
}

/// A multipart/form-data body, as a browser's form sends it.
fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "----dnd-upload-test-boundary";
    let mut body = Vec::new();
    for p in parts {
        write!(body, "--{boundary}\r\n").unwrap();
        match p {
            Part::Text(name, value) => {
                write!(body, "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").unwrap()
            }
            Part::File(name, file, bytes) => {
                write!(body, "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n").unwrap();
                write!(body, "Content-Type: application/octet-stream\r\n\r\n").unwrap();
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn skimage(name: &str) -> Vec<u8> {
    std::fs::read(dissect::assets::assets_dir().join("probe/builtin/skimage").join(name)).unwrap()
}

/// A zip of `(name, bytes, compression)` entries.
fn zip_of(entries: &[(&str, Vec<u8>, CompressionMethod)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, method) in entries {
        w.start_file(*name, SimpleFileOptions::default().compression_method(*method)).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Rewrites the uncompressed size the zip declares for its first entry (local header and
/// central directory), as a zip bomb that lies about its sizes would.
fn declare_size(mut zip: Vec<u8>, size: u32) -> Vec<u8> {
    assert_eq!(&zip[..4], b"PK\x03\x04");
    zip[22..26].copy_from_slice(&size.to_le_bytes());
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").expect("a central directory");
    zip[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
    zip
}

const STORED: CompressionMethod = CompressionMethod::Stored;
const DEFLATED: CompressionMethod = CompressionMethod::Deflated;

#[tokio::test(flavor = "multi_thread")]
async fn a_zip_of_images_becomes_a_registered_probing_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let (cookie, csrf) = s.login().await;
    let zip = zip_of(&[
        ("photos/cups/coffee.png", skimage("coffee.png"), DEFLATED),
        ("photos/cats/chelsea.png", skimage("chelsea.png"), STORED),
        ("photos/rocket.jpg", skimage("rocket.jpg"), DEFLATED),
        ("photos/rocket.txt", skimage("rocket.txt"), DEFLATED),
        ("photos/README.md", b"not an image".to_vec(), DEFLATED),
        ("__MACOSX/photos/._rocket.jpg", b"resource fork".to_vec(), STORED),
    ]);
    let parts =
        [Part::Text("csrf", &csrf), Part::Text("name", "my-upload"), Part::File("zip", "photos.zip", zip.clone())];
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &parts).await;
    assert_eq!(status, StatusCode::OK, "{text}\n{}", s.log());
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            answer["name"].as_str(),
            answer["images"].as_i64(),
            answer["descriptions"].as_i64(),
            answer["skipped"].as_i64()
        ),
        (Some("my-upload"), Some(3), Some(1), Some(2)),
        "{answer}"
    );

    // The same registration job as a folder on disk, visible in the queue.
    let job = s.finished(answer["job"].as_i64().unwrap()).await;
    assert_eq!(job.status, "done", "{job:#?}\n{}", s.log());
    assert_eq!(job.message.as_deref(), Some("probing set `my-upload`: 3 images, 0 files rejected"));
    let set = dir.path().join("probe_sets/my-upload");
    assert!(set.join("photos/cups/coffee.png").is_file() && set.join("photos/rocket.txt").is_file());
    assert!(
        !set.join("photos/README.md").exists() && !set.join("__MACOSX").exists(),
        "only images and descriptions are kept"
    );
    assert!(std::fs::read_dir(dir.path().join("uploads")).unwrap().next().is_none(), "the staging folder is gone");

    // A usable set: offered by the start form, labels from folders, the description kept.
    let form = client().post(format!("{}/api/jobs/form", s.base)).header("cookie", &cookie).send().await.unwrap();
    let form: serde_json::Value = form.json().await.unwrap();
    assert!(form["probe_sets"].as_array().unwrap().iter().any(|p| p[0] == "my-upload" && p[2] == 3), "{form}");
    let described = s
        .query_i64(
            "SELECT count(*) FROM probe_set_images i JOIN probe_sets s ON s.id = i.probe_set_id
             WHERE s.slug = 'my-upload' AND i.rel_path = 'photos/rocket.jpg' AND i.description = 'a rocket on a launch pad at dusk'",
        )
        .await;
    assert_eq!(described, 1);
    assert_eq!(s.query_i64("SELECT count(*) FROM probe_set_images i JOIN probe_sets s ON s.id = i.probe_set_id WHERE s.slug = 'my-upload' AND i.label = 'cups'").await, 1);

    // A name is used once; without a name the zip's file name is used.
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &parts).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("`my-upload` was already uploaded"), "{text}");
    let unnamed = [Part::Text("csrf", &csrf), Part::File("zip", "Holiday Photos.zip", zip)];
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &unnamed).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"name\":\"holiday-photos\""), "{text}");
    let bad_name = [
        Part::Text("csrf", &csrf),
        Part::Text("name", "../etc"),
        Part::File("zip", "x.zip", zip_of(&[("a.png", skimage("coffee.png"), STORED)])),
    ];
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &bad_name).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("name `../etc` is not usable"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_zips_name_the_reason_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let (cookie, csrf) = s.login().await;
    let good = zip_of(&[("coffee.png", skimage("coffee.png"), STORED)]);
    let upload = |zip: Vec<u8>| {
        vec![Part::Text("csrf", &csrf), Part::Text("name", "refused"), Part::File("zip", "set.zip", zip)]
    };
    let refused = |status: StatusCode, text: &str, expected: StatusCode, needle: &str| {
        assert_eq!(status, expected, "{text}");
        assert!(text.contains(needle), "expected `{needle}` in: {text}");
    };

    // Only the admin, and only with the session's CSRF token.
    let (status, text) = s.upload("/api/uploads/probe-set", None, &upload(good.clone())).await;
    refused(status, &text, StatusCode::FORBIDDEN, "admin login required");
    let forged = [Part::Text("csrf", "not-the-token"), Part::File("zip", "set.zip", good.clone())];
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &forged).await;
    refused(status, &text, StatusCode::FORBIDDEN, "CSRF");
    let tokenless = [Part::File("zip", "set.zip", good.clone())];
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &tokenless).await;
    refused(status, &text, StatusCode::FORBIDDEN, "CSRF token must come before the file");

    // A body over `max_zip_bytes`.
    let big = zip_of(&[("big.bmp", noise(MAX_ZIP as usize + (1 << 20)), STORED)]);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(big)).await;
    refused(status, &text, StatusCode::PAYLOAD_TOO_LARGE, "uploads.max_zip_bytes");

    // Zip bombs: an entry expanding 1000×, honest sizes over the unpacked limit, and an entry
    // unpacking to far more than it declares.
    let bomb = zip_of(&[("coffee.png", skimage("coffee.png"), STORED), ("bomb.png", vec![0u8; 64 << 20], DEFLATED)]);
    assert!(bomb.len() < 1 << 20, "a real bomb: {} bytes", bomb.len());
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(bomb)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "zip bomb");
    assert!(text.contains("uploads.max_ratio") && text.contains("bomb.png"), "{text}");
    let heavy = zip_of(&[("a.bmp", noise(4 << 20), STORED), ("b.bmp", noise(3 << 20), STORED)]);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(heavy)).await;
    refused(status, &text, StatusCode::PAYLOAD_TOO_LARGE, "uploads.max_unpacked_bytes");
    let liar = declare_size(zip_of(&[("liar.png", skimage("coffee.png").repeat(8), DEFLATED)]), 1000);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(liar)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("liar.png"), "{text}");

    // Too many entries.
    let many: Vec<(String, Vec<u8>, CompressionMethod)> =
        (0..MAX_FILES + 1).map(|i| (format!("{i}.txt"), b"x".to_vec(), STORED)).collect();
    let many: Vec<(&str, Vec<u8>, CompressionMethod)> =
        many.iter().map(|(n, b, m)| (n.as_str(), b.clone(), *m)).collect();
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(zip_of(&many))).await;
    refused(status, &text, StatusCode::PAYLOAD_TOO_LARGE, "uploads.max_files");

    // Entries that leave the folder, links, and archives that are not zips or hold no image.
    let escaping =
        zip_of(&[("coffee.png", skimage("coffee.png"), STORED), ("../escaped.png", skimage("chelsea.png"), STORED)]);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(escaping)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "`../escaped.png` climbs out");
    let absolute = zip_of(&[("/tmp/abs.png", skimage("coffee.png"), STORED)]);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(absolute)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "is an absolute path");
    let linked = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("coffee.png", SimpleFileOptions::default()).unwrap();
        w.write_all(&skimage("coffee.png")).unwrap();
        w.add_symlink("passwd.png", "/etc/passwd", SimpleFileOptions::default()).unwrap();
        w.finish().unwrap().into_inner()
    };
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(linked)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "symbolic link");
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(noise(50_000))).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "not a readable zip archive");
    let truncated = good[..good.len() / 2].to_vec();
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(truncated)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "not a readable zip archive");
    let imageless = zip_of(&[("notes.md", b"# no images here".to_vec(), DEFLATED)]);
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(imageless)).await;
    refused(status, &text, StatusCode::BAD_REQUEST, "holds no image");

    // Nothing of any of them stays: no staging folder, no set folder, no job, nothing escaped.
    assert_eq!(s.uploaded_files(), Vec::<PathBuf>::new());
    assert!(!dir.path().join("escaped.png").exists() && !dir.path().join("uploads/escaped.png").exists());
    assert_eq!(s.query_i64("SELECT count(*) FROM jobs").await, 0);

    // The server still takes a good upload afterwards.
    let (status, text) = s.upload("/api/uploads/probe-set", Some(&cookie), &upload(good)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

/// A TorchScript archive (written as `torch.jit.save` would) whose `forward` returns a 4-D
/// `relu` map and a 2-D pooled vector; `training` is saved as in a Python export.
fn tiny_torchscript() -> Vec<u8> {
    let code = "class TinyNet(Module):\n  __parameters__ = []\n  __buffers__ = []\n  training : bool\n  \
                def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tuple[Tensor, Tensor]:\n    \
                a = torch.relu(x)\n    c = torch.mean(x, [2, 3])\n    return (a, c)\n";
    let mut data = b"\x80\x02c__torch__\nTinyNet\nq\x00)\x81}(X".to_vec();
    data.extend(8u32.to_le_bytes());
    data.extend(b"training\x88ubq\x01.");
    zip_of(&[
        ("tinynet/data.pkl", data, STORED),
        ("tinynet/code/__torch__.py", code.as_bytes().to_vec(), STORED),
        ("tinynet/constants.pkl", b"\x80\x02).".to_vec(), STORED),
        ("tinynet/version", b"3\n".to_vec(), STORED),
    ])
}

fn tiny_manifest() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": "tinynet",
        "layers": [{"name": "relu", "kind": "conv"}, {"name": "pooled", "kind": "linear"}],
        "input_size": [32, 32],
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_and_its_manifest_are_uploaded_and_registered() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let (cookie, csrf) = s.login().await;
    let model = |name: &'static str, pt: Vec<u8>, manifest: Vec<u8>| {
        let mut parts = vec![Part::Text("csrf", &csrf)];
        if !name.is_empty() {
            parts.push(Part::Text("name", name));
        }
        parts.push(Part::File("model", "TinyNet.pt", pt));
        parts.push(Part::File("manifest", "tinynet.json", manifest));
        parts
    };

    // Refused before anything is queued or kept.
    let (status, text) =
        s.upload("/api/uploads/model", None, &model("tiny", tiny_torchscript(), tiny_manifest())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, text) =
        s.upload("/api/uploads/model", Some(&cookie), &model("tiny", tiny_torchscript(), b"{ not json".to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("the manifest is refused") && text.contains("not valid JSON"), "{text}");
    let missing = serde_json::to_vec(&serde_json::json!({ "name": "x", "layers": [] })).unwrap();
    let (status, text) =
        s.upload("/api/uploads/model", Some(&cookie), &model("tiny", tiny_torchscript(), missing)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let (status, text) =
        s.upload("/api/uploads/model", Some(&cookie), &model("tiny", b"not a model".to_vec(), tiny_manifest())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("is not a TorchScript file"), "{text}");
    let (status, text) = s
        .upload("/api/uploads/model", Some(&cookie), &model("tiny", noise(MAX_MODEL as usize + 1), tiny_manifest()))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("uploads.max_model_bytes"), "{text}");
    let (status, text) = s
        .upload("/api/uploads/model", Some(&cookie), &model("efficientnet-lite0", tiny_torchscript(), tiny_manifest()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    let only_model = [Part::Text("csrf", &csrf), Part::File("model", "tiny.pt", tiny_torchscript())];
    let (status, text) = s.upload("/api/uploads/model", Some(&cookie), &only_model).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("two files"), "{text}");
    assert_eq!(s.uploaded_files(), Vec::<PathBuf>::new());
    assert_eq!(s.query_i64("SELECT count(*) FROM jobs").await, 0);

    // Without a name, the model's file name gives it; the registration job loads it.
    let (status, text) =
        s.upload("/api/uploads/model", Some(&cookie), &model("", tiny_torchscript(), tiny_manifest())).await;
    assert_eq!(status, StatusCode::OK, "{text}\n{}", s.log());
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["name"], "tinynet");
    assert!(
        dir.path().join("models/tinynet/tinynet.pt").is_file()
            && dir.path().join("models/tinynet/tinynet.json").is_file()
    );
    let job = s.finished(answer["job"].as_i64().unwrap()).await;
    assert_eq!(job.status, "done", "{job:#?}\n{}", s.log());
    assert_eq!(job.message.as_deref(), Some("model `tinynet` with 2 dissectable layers"));
    assert_eq!(
        s.query_i64("SELECT count(*) FROM layers y JOIN models m ON m.id = y.model_id WHERE m.slug = 'tinynet'").await,
        2
    );
    let (status, text) =
        s.upload("/api/uploads/model", Some(&cookie), &model("tinynet", tiny_torchscript(), tiny_manifest())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
}
