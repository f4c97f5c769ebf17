//! Failed logins, counted per client address. argon2 makes each guess slow, but not few: after
//! [`MAX_FAILURES`] failed logins from one address within [`WINDOW`] (counted from the first
//! of them), that address's logins are answered `429` until the window is over, the right
//! password included, so a guesser gets [`MAX_FAILURES`] guesses per window. A successful login
//! clears its address's count.
//!
//! An IPv6 address is counted by its /64 network ([`bucket`]): one subscriber line or host is
//! given a whole /64, so counted one by one its addresses would be 2^64 fresh starts. An
//! IPv4 address written as IPv6 (`::ffff:192.0.2.1`, as a dual-stack listener sees IPv4
//! clients) is counted as the IPv4 address it is.
//!
//! The table is bounded by [`MAX_ADDRESSES`]: when it is full, expired windows are dropped, and
//! if none has expired the oldest is, so many addresses cannot make it grow without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins one address may make within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;

/// How long an address's failures are counted, from its first.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Addresses whose failures are remembered at once.
const MAX_ADDRESSES: usize = 100_000;

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The failed-login counts of the client addresses.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// How long `address` must still wait before it may try to log in again, if it must.
    pub fn blocked_for(&self, address: IpAddr) -> Option<Duration> {
        let address = bucket(address);
        let now = Instant::now();
        let addresses = self.lock();
        let failures = addresses.get(&address)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(failures.since))?;
        (failures.count >= MAX_FAILURES).then_some(left)
    }

    /// Counts a failed login from `address`.
    pub fn failed(&self, address: IpAddr) {
        let address = bucket(address);
        let now = Instant::now();
        let mut addresses = self.lock();
        if addresses.len() >= MAX_ADDRESSES && !addresses.contains_key(&address) {
            addresses.retain(|_, failures| now.saturating_duration_since(failures.since) < WINDOW);
            if addresses.len() >= MAX_ADDRESSES
                && let Some(oldest) = addresses
                    .iter()
                    .min_by_key(|(_, failures)| failures.since)
                    .map(|(address, _)| *address)
            {
                addresses.remove(&oldest);
            }
        }
        let failures = addresses.entry(address).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.saturating_duration_since(failures.since) >= WINDOW {
            *failures = Failures {
                count: 0,
                since: now,
            };
        }
        failures.count = failures.count.saturating_add(1);
    }

    /// Clears `address`'s count after a successful login.
    pub fn succeeded(&self, address: IpAddr) {
        self.lock().remove(&bucket(address));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        // A panic while holding the lock leaves only counts behind: still usable.
        self.addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What `address`'s failures are counted under: an IPv4 address itself (unmapped when written
/// as IPv6), an IPv6 address's /64 network.
fn bucket(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(network.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_no_other_is() {
        let throttle = LoginThrottle::default();
        let guesser: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 1..MAX_FAILURES {
            throttle.failed(guesser);
        }
        assert_eq!(throttle.blocked_for(guesser), None, "one guess is left");
        throttle.failed(guesser);
        let left = throttle.blocked_for(guesser).expect("blocked");
        assert!(left <= WINDOW && left > WINDOW - Duration::from_secs(60));
        assert_eq!(throttle.blocked_for(other), None, "another address is not");
        throttle.succeeded(other);
        assert!(throttle.blocked_for(guesser).is_some());
        throttle.succeeded(guesser);
        assert_eq!(throttle.blocked_for(guesser), None);
    }

    #[test]
    fn an_ipv6_guesser_cannot_start_over_from_another_address_of_its_network() {
        let throttle = LoginThrottle::default();
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        for host in 1..=MAX_FAILURES {
            throttle.failed(address(&format!("2001:db8:1:2::{host:x}")));
        }
        assert!(
            throttle
                .blocked_for(address("2001:db8:1:2:ffff::1"))
                .is_some()
        );
        assert_eq!(
            throttle.blocked_for(address("2001:db8:1:3::1")),
            None,
            "the next /64 is someone else"
        );
    }

    #[test]
    fn an_ipv4_address_written_as_ipv6_is_the_ipv4_address() {
        let throttle = LoginThrottle::default();
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        for _ in 0..MAX_FAILURES {
            throttle.failed(address("::ffff:192.0.2.1"));
        }
        assert!(throttle.blocked_for(address("192.0.2.1")).is_some());
        // Not the whole of IPv4: the mapped addresses share a /64 as IPv6.
        assert_eq!(throttle.blocked_for(address("::ffff:192.0.2.2")), None);
        assert_eq!(throttle.blocked_for(address("192.0.2.2")), None);
        throttle.succeeded(address("192.0.2.1"));
        assert_eq!(throttle.blocked_for(address("::ffff:192.0.2.1")), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = LoginThrottle::default();
        for index in 0..(MAX_ADDRESSES as u32 + 10) {
            throttle.failed(IpAddr::from(index.to_be_bytes()));
        }
        assert!(throttle.lock().len() <= MAX_ADDRESSES);
    }
}
