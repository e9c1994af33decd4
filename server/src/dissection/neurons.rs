//! Which neurons a run dissects: `0-49`, `3,7,9`, `0-9,20`, or `random:50` (a seeded sample).

/// Parses `spec` for a layer of `channels` units; `seed` drives `random:N`.
/// Units come back sorted and without duplicates.
pub fn parse_neurons(spec: &str, channels: usize, seed: u64) -> Result<Vec<usize>, String> {
    let spec = spec.trim();
    let out_of_range = |u: usize| format!("unit {u} is outside the layer, which has units 0-{}", channels.saturating_sub(1));
    if let Some(n) = spec.strip_prefix("random:") {
        let n: usize = n.trim().parse().map_err(|_| format!("`{spec}`: expected random:N with N a whole number"))?;
        if n == 0 || n > channels {
            return Err(format!("`{spec}`: the layer has {channels} units; ask for 1 to {channels}"));
        }
        return Ok(sample(channels, n, seed));
    }
    let mut units = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("`{spec}`: empty item; use e.g. 0-49, 3,7,9 or random:50"));
        }
        let parse = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{part}` is not a unit number or range"));
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(part)?, parse(part)?),
        };
        if lo > hi {
            return Err(format!("`{part}`: the range is backwards"));
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

/// `n` distinct units out of `channels`, by a seeded partial Fisher–Yates shuffle.
fn sample(channels: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut all: Vec<usize> = (0..channels).collect();
    for i in 0..n {
        let j = i + (next() % (channels - i) as u64) as usize;
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
        assert_eq!(parse_neurons("0-4", 10, 0).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_neurons("7, 3,9", 10, 0).unwrap(), vec![3, 7, 9]);
        assert_eq!(parse_neurons("0-2,1,8", 10, 0).unwrap(), vec![0, 1, 2, 8]);
    }

    #[test]
    fn random_samples_are_seeded_distinct_and_in_range() {
        let a = parse_neurons("random:50", 192, 1).unwrap();
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 192);
        assert_eq!(a, parse_neurons("random:50", 192, 1).unwrap());
        assert_ne!(a, parse_neurons("random:50", 192, 2).unwrap());
        assert_eq!(parse_neurons("random:4", 4, 9).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(parse_neurons("0-10", 10, 0).unwrap_err().contains("unit 10 is outside the layer, which has units 0-9"));
        assert!(parse_neurons("5-2", 10, 0).unwrap_err().contains("backwards"));
        assert!(parse_neurons("a", 10, 0).unwrap_err().contains("not a unit number"));
        assert!(parse_neurons("random:11", 10, 0).unwrap_err().contains("has 10 units"));
        assert!(parse_neurons("1,,2", 10, 0).unwrap_err().contains("empty item"));
    }
}
