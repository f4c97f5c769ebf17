//! Request ids: `req_` and 32 lowercase hex digits, unique within the process and, across
//! processes, clashing only if two processes drew the same 32-bit random number and handed out
//! the same count in the same millisecond. Settling is idempotent by request id, so two
//! requests must never share one.
//!
//! The digits are the time in Unix milliseconds (12), a random number drawn once per process
//! (8), and a counter that starts at a random value (12): no system call per request, and the
//! ids of one process sort in the order they were made, like UUIDv7's. That order is what the
//! ledger's `UNIQUE` index on `request_id` wants: each charge's entry lands at the index's right
//! edge instead of at a random place in it. Random ids split pages all over the index, and each
//! changed page is one more WAL frame; SQLite's page swaps in those splits also made every
//! commit walk the whole page cache (`pcache1TruncateUnsafe`: 2.7% of the gateway's CPU).

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

/// The 48 bits of a Unix-millisecond time that fit 12 hex digits (until the year 10889).
const MILLIS_MASK: u64 = (1 << 48) - 1;

/// A new request id.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (process, start) = seed();
    let count = start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) & MILLIS_MASK;
    let millis = u64::try_from(crate::db::clock::now_unix_millis()).unwrap_or(0) & MILLIS_MASK;
    format!("req_{millis:012x}{:08x}{count:012x}", process >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_process_sort_in_the_order_they_were_made_and_start_with_the_time() {
        let before = crate::db::clock::now_unix_millis();
        // The counter starts at a random 48-bit value: wrapping within these 10,000 ids has odds
        // of 10,000 in 2⁴⁸.
        let made: Vec<String> = (0..10_000).map(|_| new_request_id()).collect();
        let after = crate::db::clock::now_unix_millis();
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(sorted, made);
        for id in [&made[0], &made[9_999]] {
            let millis = i64::from_str_radix(&id[4..16], 16).unwrap();
            assert!(
                (before..=after).contains(&millis),
                "{id}: {before}..={after}"
            );
        }
    }

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
