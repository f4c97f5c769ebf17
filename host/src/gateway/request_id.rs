//! Request ids: `req_` and 32 lowercase hex digits, unique within the process and, across
//! processes, with odds of a clash of 2⁻⁶⁴. Settling is idempotent by request id, so two
//! requests must never share one.
//!
//! The first half is a random number drawn once per process; the second half is a counter
//! passed through a bijective mixer (SplitMix64's finaliser), so ids look random without a
//! system call per request, and no two ids of one process are equal.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The process's random half and the counter's random starting point.
fn seed() -> (u64, u64) {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No entropy source: the clock and the process id still separate restarts.
            let now = crate::db::clock::now_unix_millis();
            bytes[..8].copy_from_slice(&now.to_le_bytes());
            bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        let (high, low) = bytes.split_at(8);
        let word = |half: &[u8]| {
            half.iter()
                .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
        };
        (word(high), word(low))
    })
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct inputs give distinct outputs.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// A new request id.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (process, start) = seed();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{process:016x}{:016x}", mix(start.wrapping_add(count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape_and_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            let hex = id.strip_prefix("req_").unwrap_or_default();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(
                hex.bytes()
                    .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
            );
        }
    }
}
