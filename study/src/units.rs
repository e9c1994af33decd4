//! Unit specs, shared by `dnd dissect` and study set-up: `0-49`, `3,7,9`, `0-9,20`, or `random:50`
//! (a seeded sample), so a researcher writes neuron choices the same way everywhere.

/// Parses `spec` for a layer of `channels` units; `seed` drives `random:N`.
/// Units come back sorted and without duplicates.
pub fn parse_units(spec: &str, channels: usize, seed: u64) -> Result<Vec<usize>, String> {
    let spec = spec.trim();
    let shown_spec = quote(spec);
    let out_of_range =
        |u: usize| format!("unit {u} is outside the layer, which has units 0-{}", channels.saturating_sub(1));
    if let Some(n) = spec.strip_prefix("random:") {
        let n: usize =
            n.trim().parse().map_err(|_| format!("{shown_spec}: expected random:N with N a whole number"))?;
        if n == 0 || n > channels {
            return Err(format!("{shown_spec}: the layer has {channels} units; ask for 1 to {channels}"));
        }
        let all: Vec<usize> = (0..channels).collect();
        return Ok(sample_units(&all, n, seed));
    }
    let mut units = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("{shown_spec}: empty item; use e.g. 0-49, 3,7,9 or random:50"));
        }
        let parse =
            |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{} is not a unit number or range", quote(part)));
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(part)?, parse(part)?),
        };
        if lo > hi {
            return Err(format!("{}: the range is backwards", quote(part)));
        }
        if hi >= channels {
            return Err(out_of_range(hi));
        }
        units.extend(lo..=hi);
    }
    units.sort_unstable();
    units.dedup();
    Ok(units)
}

/// A spec (or a piece of one) as an error quotes it: in backticks, escaped, at most 40 characters
/// (a pasted file must not come back whole in the message).
fn quote(text: &str) -> String {
    const SHOWN: usize = 40;
    let (mut shown, mut len) = (String::new(), 0);
    for c in text.chars() {
        // Bounded after escaping (a control character takes up to ten characters).
        let width = c.escape_debug().len();
        if len + width > SHOWN {
            shown.push('…');
            break;
        }
        shown.extend(c.escape_debug());
        len += width;
    }
    format!("`{shown}`")
}

/// Whether `spec` asks for a random sample (`random:N`); the study draws it among eligible units.
pub fn random_count(spec: &str) -> Option<Result<usize, String>> {
    let n = spec.trim().strip_prefix("random:")?;
    Some(n.trim().parse().map_err(|_| format!("{}: expected random:N with N a whole number", quote(spec.trim()))))
}

/// `n` distinct units of `pool` (n ≤ pool.len()), sorted, by a seeded partial Fisher–Yates shuffle.
pub fn sample_units(pool: &[usize], n: usize, seed: u64) -> Vec<usize> {
    let n = n.min(pool.len());
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut all = pool.to_vec();
    for i in 0..n {
        let j = i + rng.below(all.len() - i);
        all.swap(i, j);
    }
    let mut picked = all[..n].to_vec();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_mixtures() {
        assert_eq!(parse_units("0-4", 10, 0).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_units("7, 3,9", 10, 0).unwrap(), vec![3, 7, 9]);
        assert_eq!(parse_units("0-2,1,8", 10, 0).unwrap(), vec![0, 1, 2, 8]);
    }

    #[test]
    fn random_samples_are_seeded_distinct_and_in_range() {
        let a = parse_units("random:50", 192, 1).unwrap();
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 192);
        assert_eq!(a, parse_units("random:50", 192, 1).unwrap());
        assert_ne!(a, parse_units("random:50", 192, 2).unwrap());
        assert_eq!(parse_units("random:4", 4, 9).unwrap(), vec![0, 1, 2, 3]);
        // A sample drawn from a pool stays inside it.
        let pool = [3, 8, 20, 21, 40];
        let s = sample_units(&pool, 3, 5);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|u| pool.contains(u)) && s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(random_count(" random:7 "), Some(Ok(7)));
        assert!(random_count("1-3").is_none());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(parse_units("0-10", 10, 0).unwrap_err().contains("unit 10 is outside the layer, which has units 0-9"));
        assert!(parse_units("5-2", 10, 0).unwrap_err().contains("backwards"));
        assert!(parse_units("a", 10, 0).unwrap_err().contains("not a unit number"));
        assert!(parse_units("random:11", 10, 0).unwrap_err().contains("has 10 units"));
        assert!(parse_units("1,,2", 10, 0).unwrap_err().contains("empty item"));
    }
}
