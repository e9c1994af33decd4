//! A small seeded mutational fuzzer for the code that reads what users hand in: label files,
//! model manifests, unit specs, uploaded zips and probing images. Each crate's tests run it over
//! a bounded number of inputs per target (seconds in all, see [`iterations`]);
//! `DND_FUZZ_ITERS=200000 cargo test --release fuzz` runs longer (docs in README.md, "Tests").
//!
//! No coverage guidance (that would need a nightly toolchain and a second build of every crate):
//! mutations start from valid seed inputs and stack on each other, with a dictionary of the
//! format's own tokens and a few values known to break parsers (huge numbers, separators,
//! long repeats). It is deterministic: a failure names its target and input index, which the
//! same build reproduces, and prints an excerpt of the input to keep as a regression test.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Bytes that break parsers in general, added to every target's own dictionary.
const GENERAL_TOKENS: [&[u8]; 14] = [
    b"\0",
    b"\xff\xfe",
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"1e309",
    b"NaN",
    b"\xc3\x28",
    b"\xe2\x80\xae",
];

/// Inputs tried per target by default: enough to reach the error paths of a parser from its
/// seeds in well under a second each.
pub const DEFAULT_ITERATIONS: usize = 3000;

/// How many inputs each target tries: `DND_FUZZ_ITERS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("DND_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A seeded byte mutator.
pub struct Mutator {
    state: u64,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    /// `dictionary`: the format's own tokens (field names, separators, magic numbers).
    pub fn new(seed: u64, dictionary: &[&[u8]]) -> Self {
        let mut words: Vec<Vec<u8>> = dictionary.iter().map(|w| w.to_vec()).collect();
        words.extend(GENERAL_TOKENS.iter().map(|w| w.to_vec()));
        Mutator { state: seed ^ 0x9e37_79b9_7f4a_7c15, dictionary: words }
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `input` with one to four random edits.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            let at = if len == 0 { 0 } else { self.below(len + 1) };
            match self.below(9) {
                0 if len > 0 => {
                    let i = self.below(len);
                    out[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    out[i] = self.next() as u8;
                }
                2 => {
                    let bytes: Vec<u8> = (0..1 + self.below(8)).map(|_| self.next() as u8).collect();
                    out.splice(at..at, bytes);
                }
                3 if len > 0 => {
                    let end = (at + 1 + self.below(16)).min(len);
                    out.drain(at.min(len - 1)..end);
                }
                4 if len > 0 => {
                    // Cut short, as a failed copy or download would.
                    out.truncate(self.below(len));
                }
                5 if len > 0 => {
                    // Repeat a piece many times: long fields, deep nesting, huge files.
                    let start = self.below(len);
                    let end = (start + 1 + self.below(32)).min(len);
                    let piece = out[start..end].to_vec();
                    let most = if self.below(4) == 0 { 2000 } else { 8 };
                    let times = 1 + self.below(most);
                    let repeated: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
                    out.splice(end..end, repeated);
                }
                6 if len > 0 => {
                    // Swap two bytes.
                    let (i, j) = (self.below(len), self.below(len));
                    out.swap(i, j);
                }
                _ => {
                    let pick = self.below(self.dictionary.len());
                    let word = self.dictionary[pick].clone();
                    out.splice(at..at, word);
                }
            }
        }
        out
    }
}

/// An excerpt of `input` fit to paste into a regression test.
pub fn show(input: &[u8]) -> String {
    let head: Vec<u8> = input.iter().copied().take(300).collect();
    format!("{} bytes: b\"{}\"{}", input.len(), head.escape_ascii(), if input.len() > 300 { "…" } else { "" })
}

/// Runs `check` on [`iterations`]`(default)` mutated inputs of `seeds` (each mutation stacks on
/// the last input half the time, else starts again from a seed). `check` returns `Err` when a
/// property fails; a panic in it fails too. Panics naming `target`, the input's index and an
/// excerpt of it on the first failure.
pub fn run(
    target: &str,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    default: usize,
    mut check: impl FnMut(&[u8]) -> Result<(), String>,
) {
    assert!(!seeds.is_empty(), "{target}: no seed inputs");
    let mut m = Mutator::new(target.bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64)), dictionary);
    // The seeds themselves first: a property that fails on valid input is a broken target.
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(e) = check(seed) {
            panic!("fuzz {target}: seed {i} fails: {e}");
        }
    }
    let mut last = seeds[0].clone();
    for i in 0..iterations(default) {
        let base = if m.below(2) == 0 { last } else { seeds[m.below(seeds.len())].clone() };
        // Keep inputs from growing without end when mutations stack.
        let base = if base.len() > 1 << 20 { seeds[0].clone() } else { base };
        let input = m.mutate(&base);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("fuzz {target}: input {i} breaks a property: {e}\ninput: {}", show(&input)),
            Err(_) => panic!("fuzz {target}: input {i} panics (message above)\ninput: {}", show(&input)),
        }
        last = input;
    }
}

/// `Err` when an error message quoting input is longer than `max` characters.
pub fn bounded_message(message: &str, max: usize) -> Result<(), String> {
    let chars = message.chars().count();
    if chars > max {
        let head: String = message.chars().take(200).collect();
        return Err(format!("an error message is {chars} characters long (at most {max}): {head}…"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_vary() {
        let seed = b"layer,unit,description\nconv1,0,dog\n";
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7, &[b"layer"]);
            (0..50).map(|_| m.mutate(seed)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7, &[b"layer"]);
            (0..50).map(|_| m.mutate(seed)).collect()
        };
        assert_eq!(a, b, "the same seed gives the same inputs");
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 40, "{} distinct of 50", distinct.len());
        assert!(a.iter().any(|x| x.len() < seed.len()) && a.iter().any(|x| x.len() > seed.len()));
    }

    #[test]
    fn a_failing_property_names_the_target_and_the_input() {
        let caught = catch_unwind(|| {
            run(
                "demo",
                &[b"ab".to_vec()],
                &[],
                500,
                |input| {
                    if input.len() > 40 {
                        Err("too long".into())
                    } else {
                        Ok(())
                    }
                },
            )
        });
        let message = *caught.unwrap_err().downcast::<String>().unwrap();
        assert!(message.starts_with("fuzz demo: input ") && message.contains("too long"), "{message}");
        assert!(message.contains("bytes: b\""), "{message}");
    }
}
