//! A tiny stand-in for CLIP, written without Python, for tests and demos of CLIP-Dissect: a
//! TorchScript archive (a stored zip of `code/__torch__.py`, `data.pkl`, `constants.pkl` and
//! `version`, also used by `tests/torchscript.rs`) whose methods have CLIP's interface, and a WordLevel
//! `tokenizer.json` with CLIP's special tokens.
//!
//! * `encode_image(image: N×3×H×W) -> N×D`: the image's mean colour (per normalised channel)
//!   times a 3×D matrix.
//! * `encode_text(text: int64 N×77) -> N×D`: row `text[n, argmax(text[n]) − 1]` of a V×D table,
//!   i.e. the embedding of the last token before `<|endoftext|>`, found the way OpenAI's
//!   `encode_text` finds it (so a wrong end token or layout gives a different embedding).

use std::path::Path;

/// `torch.reshape(torch.tensor([...], dtype=6), [rows, cols])` with exact f32 values.
fn literal(values: &[f32], cols: usize) -> String {
    assert!(cols > 0 && values.len() % cols == 0, "values must fill whole rows");
    let items: Vec<String> = values
        .iter()
        .map(|v| {
            let s = format!("{v:?}");
            if s.contains(['.', 'e']) {
                s
            } else {
                format!("{s}.0")
            }
        })
        .collect();
    format!("torch.reshape(torch.tensor([{}], dtype=6), [{}, {cols}])", items.join(", "), values.len() / cols)
}

/// Writes the fake CLIP: `image_proj` is 3×`dim` (row-major), `token_table` V×`dim`.
pub fn write_fake_clip(path: &Path, dim: usize, image_proj: &[f32], token_table: &[f32]) -> std::io::Result<()> {
    assert_eq!(image_proj.len(), 3 * dim, "image_proj must be 3×dim");
    let code = format!(
        "class FakeClip(Module):\n  __parameters__ = []\n  __buffers__ = []\n  training : bool\n\
         \x20 def encode_image(self: __torch__.FakeClip,\n    image: Tensor) -> Tensor:\n\
         \x20   w = {}\n\
         \x20   m = torch.mean(image, [2, 3])\n\
         \x20   return torch.matmul(m, w)\n\
         \x20 def encode_text(self: __torch__.FakeClip,\n    text: Tensor) -> Tensor:\n\
         \x20   w = {}\n\
         \x20   pos = torch.sub(torch.argmax(text, 1), 1)\n\
         \x20   last = torch.squeeze(torch.gather(text, 1, torch.unsqueeze(pos, 1)), 1)\n\
         \x20   return torch.embedding(w, last)\n\
         \x20 def forward(self: __torch__.FakeClip,\n    image: Tensor) -> Tensor:\n\
         \x20   return (self).encode_image(image, )\n",
        literal(image_proj, dim),
        literal(token_table, dim),
    );
    write_torchscript_archive(path, "FakeClip", false, &code)
}

/// Writes a TorchScript archive of one module class `class` with no parameters, a `training`
/// attribute saved as `training`, and `code` as its `code/__torch__.py` (the class definition).
pub fn write_torchscript_archive(path: &Path, class: &str, training: bool, code: &str) -> std::io::Result<()> {
    // data.pkl: protocol 2; GLOBAL '__torch__ <class>', EMPTY_TUPLE, NEWOBJ, {'training': <bool>}, BUILD.
    let mut data: Vec<u8> =
        b"\x80\x02c__torch__\n".iter().copied().chain(class.bytes()).chain(*b"\nq\x00)\x81}(X").collect();
    data.extend(8u32.to_le_bytes());
    data.extend(b"training");
    data.push(if training { 0x88 } else { 0x89 });
    data.extend(b"ubq\x01.");
    let dir = class.to_lowercase();
    write_zip(
        path,
        &[
            (format!("{dir}/data.pkl"), data),
            (format!("{dir}/code/__torch__.py"), code.as_bytes().to_vec()),
            (format!("{dir}/constants.pkl"), b"\x80\x02).".to_vec()),
            (format!("{dir}/version"), b"3\n".to_vec()),
        ],
    )
}

/// Writes a WordLevel `tokenizer.json` (lower-casing, split on whitespace) whose ids are
/// `words` in order, then `[UNK]`, `<|startoftext|>` and `<|endoftext|>` (the largest id, as in
/// CLIP). Answers the vocabulary size.
pub fn write_word_tokenizer(path: &Path, words: &[&str]) -> std::io::Result<usize> {
    let mut vocab = serde_json::Map::new();
    for w in words.iter().copied().chain(["[UNK]", super::text::START_TOKEN, super::text::END_TOKEN]) {
        let id = vocab.len();
        vocab.insert(w.to_string(), id.into());
    }
    let size = vocab.len();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    Ok(size)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip of stored (uncompressed) entries, as TorchScript archives are.
fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let (crc, len) = (crc32(data), data.len() as u32);
        // Local header: version 2.0, no flags, stored, time 0, date 1980-01-01.
        out.extend(0x0403_4b50u32.to_le_bytes());
        for v in [20u16, 0, 0, 0, 0x21] {
            out.extend(v.to_le_bytes());
        }
        for v in [crc, len, len] {
            out.extend(v.to_le_bytes());
        }
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        for v in [20u16, 20, 0, 0, 0, 0x21] {
            central.extend(v.to_le_bytes());
        }
        for v in [crc, len, len] {
            central.extend(v.to_le_bytes());
        }
        for v in [name.len() as u16, 0, 0, 0, 0] {
            central.extend(v.to_le_bytes());
        }
        central.extend(0u32.to_le_bytes());
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, entries.len() as u16, entries.len() as u16] {
        out.extend(v.to_le_bytes());
    }
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    std::fs::write(path, out)
}
