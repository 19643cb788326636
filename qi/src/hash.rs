//! Stable, dependency-free hashing for keys and deterministic assignments: the same bytes give
//! the same hash on every run and platform (std's hasher is randomly seeded per process).

pub(crate) const FNV_OFFSET: u64 = 0xcbf29ce484222325;

/// 64-bit FNV-1a over `bytes`, continuing from `h` (start from [`FNV_OFFSET`]).
pub(crate) fn fnv1a(mut h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// 64-bit FNV-1a of `parts` (each followed by a 0 byte, so `["ab", ""]` ≠ `["a", "b"]`).
pub fn stable_hash_u64(parts: &[&str]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |h, p| fnv1a(h, p.bytes().chain(std::iter::once(0u8))))
}

/// SplitMix64's finalizer: spreads every input bit over the output, so `h % n` is uniform even
/// where FNV's low bits are not (strings that differ only in their last characters).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`stable_hash_u64`] as 16 hex digits.
pub fn stable_hash(parts: &[&str]) -> String {
    format!("{:016x}", stable_hash_u64(parts))
}
