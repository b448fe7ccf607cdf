//! Near-duplicate detection: MinHash signatures over word shingles, banded LSH to find
//! candidates, and a check of the estimated Jaccard similarity against a threshold.
//!
//! Written here rather than taken from a crate: the MinHash/LSH crates on crates.io are
//! unmaintained or pull in large dependency trees for what is ~150 lines, and we need
//! deterministic, seeded, rayon-parallel signatures over our own text type.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rayon::prelude::*;

/// Parameters of the near-duplicate search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinHashParams {
    /// Number of hash functions (signature length).
    pub num_perm: usize,
    /// Words per shingle.
    pub shingle: usize,
    /// Jaccard similarity above which two records are near-duplicates (0..=1).
    pub threshold: f64,
    pub seed: u64,
}

impl Default for MinHashParams {
    fn default() -> Self {
        MinHashParams {
            num_perm: 64,
            shingle: 3,
            threshold: 0.8,
            seed: 0x5eed,
        }
    }
}

/// SplitMix64's finalizer: a fast, well-mixed 64-bit hash of a 64-bit value.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn word_hash(w: &str) -> u64 {
    // FNV-1a over lower-cased bytes: deterministic across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in w.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hashes of the word shingles of a text (a text shorter than one shingle is one shingle).
pub fn shingles(text: &str, k: usize) -> Vec<u64> {
    let mut words = Vec::new();
    let mut out = Vec::new();
    for_each_shingle(text, k, &mut words, |s| out.push(s));
    out
}

/// Calls `f` with the hash of each word shingle of `text`; `words` is scratch space.
fn for_each_shingle(text: &str, k: usize, words: &mut Vec<u64>, mut f: impl FnMut(u64)) {
    words.clear();
    words.extend(
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(word_hash),
    );
    let k = k.max(1);
    let fold = |win: &[u64]| win.iter().fold(0x9e37_79b9_7f4a_7c15, |a, &w| mix64(a ^ w));
    if words.len() <= k {
        f(fold(words));
    } else {
        words.windows(k).for_each(|win| f(fold(win)));
    }
}

/// The hash functions of a MinHash signature: `h_j(s) = (s ^ b_j) * a_j` (wrapping, `a_j`
/// odd), a multiply-shift family over shingle hashes that are already well mixed. One
/// multiplication per function and shingle; SplitMix64 per function cost five times that.
#[derive(Debug, Clone)]
pub struct Signer {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl Signer {
    pub fn new(params: &MinHashParams) -> Self {
        let n = params.num_perm as u64;
        Signer {
            a: (0..n)
                .map(|j| mix64(params.seed ^ mix64(2 * j + 1)) | 1)
                .collect(),
            b: (0..n)
                .map(|j| mix64(params.seed ^ mix64(2 * j + 2)))
                .collect(),
        }
    }

    /// The signature of the empty set, to add shingles to.
    pub fn empty(&self) -> Vec<u64> {
        vec![u64::MAX; self.a.len()]
    }

    pub fn add_shingle(&self, sig: &mut [u64], s: u64) {
        for ((m, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
            *m = (*m).min((s ^ b).wrapping_mul(a));
        }
    }

    /// Adds the `k`-word shingles of `text`; `words` is scratch space.
    pub fn add_text(&self, sig: &mut [u64], text: &str, k: usize, words: &mut Vec<u64>) {
        for_each_shingle(text, k, words, |s| self.add_shingle(sig, s));
    }
}

/// The MinHash signature of a set of shingle hashes.
pub fn signature(shingles: &[u64], params: &MinHashParams) -> Vec<u64> {
    let signer = Signer::new(params);
    let mut sig = signer.empty();
    for &s in shingles {
        signer.add_shingle(&mut sig, s);
    }
    sig
}

/// Estimated Jaccard similarity of two signatures.
pub fn similarity(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Bands × rows for a signature length, with the LSH threshold `(1/b)^(1/r)` closest to `t`.
pub fn bands_for(num_perm: usize, t: f64) -> (usize, usize) {
    let mut best = (num_perm.max(1), 1);
    let mut best_err = f64::MAX;
    for r in 1..=num_perm.max(1) {
        if !num_perm.is_multiple_of(r) {
            continue;
        }
        let b = num_perm / r;
        let err = ((1.0 / b as f64).powf(1.0 / r as f64) - t).abs();
        if err < best_err {
            best_err = err;
            best = (b, r);
        }
    }
    best
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Groups of near-duplicate texts (each group sorted, groups ordered by their first index;
/// singletons are left out). A text joins a group when its estimated similarity to the
/// first text sharing an LSH band with it reaches the threshold.
pub fn near_duplicate_groups<S: AsRef<str> + Sync>(
    texts: &[S],
    params: &MinHashParams,
) -> Vec<Vec<usize>> {
    let signer = Signer::new(params);
    let sigs: Vec<Vec<u64>> = texts
        .par_iter()
        .map_with(Vec::new(), |words, t| {
            let mut sig = signer.empty();
            signer.add_text(&mut sig, t.as_ref(), params.shingle, words);
            sig
        })
        .collect();
    groups_from_signatures(&sigs, params)
}

pub(crate) fn groups_from_signatures(sigs: &[Vec<u64>], params: &MinHashParams) -> Vec<Vec<usize>> {
    let (bands, rows) = bands_for(params.num_perm, params.threshold);
    let mut parent: Vec<usize> = (0..sigs.len()).collect();
    let mut buckets: HashMap<(usize, u64), usize> = HashMap::with_capacity(sigs.len() * bands);
    for (i, sig) in sigs.iter().enumerate() {
        for b in 0..bands {
            let band = &sig[b * rows..(b + 1) * rows];
            let mut h = std::collections::hash_map::DefaultHasher::new();
            band.hash(&mut h);
            let key = (b, h.finish());
            match buckets.get(&key) {
                Some(&rep) => {
                    if similarity(sig, &sigs[rep]) >= params.threshold {
                        let (a, c) = (find(&mut parent, i), find(&mut parent, rep));
                        if a != c {
                            parent[a.max(c)] = a.min(c);
                        }
                    }
                }
                None => {
                    buckets.insert(key, i);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..sigs.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut out {
        g.sort_unstable();
    }
    out.sort_unstable_by_key(|g| g[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_near_duplicates_only() {
        let base = "Give three tips for staying healthy. Eat a balanced diet and make sure to include plenty of fruits and vegetables, exercise regularly and get enough sleep every night";
        let texts = vec![
            base.to_string(),
            "Write a poem about the sea and the wind over the harbour at night in winter"
                .to_string(),
            format!("{base} (#2)"),
            base.replace("every night", "every day"),
        ];
        let g = near_duplicate_groups(&texts, &MinHashParams::default());
        assert_eq!(g, vec![vec![0, 2, 3]]);
        let strict = MinHashParams {
            threshold: 0.99,
            ..Default::default()
        };
        let g = near_duplicate_groups(&texts, &strict);
        assert!(g.iter().all(|g| !g.contains(&1)));
    }

    #[test]
    fn similarity_estimates_jaccard() {
        // |A ∩ B| = 120, |A ∪ B| = 200: Jaccard 0.6.
        let a: Vec<u64> = (0..160).map(|i| mix64(i + 1)).collect();
        let b: Vec<u64> = (40..200).map(|i| mix64(i + 1)).collect();
        let runs = 50;
        let mean = (0..runs)
            .map(|seed| {
                let p = MinHashParams {
                    seed,
                    ..Default::default()
                };
                similarity(&signature(&a, &p), &signature(&b, &p))
            })
            .sum::<f64>()
            / runs as f64;
        assert!((mean - 0.6).abs() < 0.03, "mean estimate {mean}");
    }

    #[test]
    fn band_choice_matches_threshold() {
        assert_eq!(bands_for(64, 0.8), (8, 8));
    }
}
