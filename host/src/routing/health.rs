//! Passive health of channels: consecutive retryable failures mark a channel unhealthy for a
//! cooldown; a success resets it; a bad key (`401`/`403`) or a `429` trips it at once. The
//! forwarder writes it, routers read it through the `health` interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When a channel turns unhealthy and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive retryable failures that mark a channel unhealthy.
    pub failure_threshold: u32,
    /// How long it stays unhealthy.
    pub cooldown: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failure_threshold: 3,
            cooldown: Duration::from_secs(60),
        }
    }
}

/// The health of one channel, as routers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHealth {
    /// The channel asked about.
    pub channel_id: String,
    /// False while it cools down.
    pub healthy: bool,
    /// Retryable failures since its last success.
    pub consecutive_failures: u32,
    /// When it last failed, in ms since the Unix epoch.
    pub last_failure_ms: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ChannelState {
    consecutive_failures: u32,
    unhealthy_until: Option<Instant>,
    last_failure_ms: Option<i64>,
}

/// The health of every channel that has failed since start; others are healthy.
#[derive(Debug, Clone, Default)]
pub struct HealthRegistry {
    policy: HealthPolicy,
    channels: Arc<Mutex<HashMap<String, ChannelState>>>,
}

impl HealthRegistry {
    /// An empty registry applying `policy`.
    pub fn new(policy: HealthPolicy) -> Self {
        HealthRegistry {
            policy,
            channels: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ChannelState>> {
        // The map holds plain counters, so a panic elsewhere cannot leave it inconsistent.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a served request: the channel is healthy again.
    pub fn record_success(&self, channel_id: &str) {
        self.lock().remove(channel_id);
    }

    /// Records a retryable failure; at the threshold the channel cools down.
    pub fn record_failure(&self, channel_id: &str) {
        let mut channels = self.lock();
        let state = channels.entry(channel_id.to_owned()).or_default();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.last_failure_ms = Some(now_ms());
        if state.consecutive_failures >= self.policy.failure_threshold {
            state.unhealthy_until = Some(Instant::now() + self.policy.cooldown);
        }
    }

    /// Marks the channel unhealthy at once for `cooldown` (the policy's when `None`).
    pub fn trip(&self, channel_id: &str, cooldown: Option<Duration>) {
        let mut channels = self.lock();
        let state = channels.entry(channel_id.to_owned()).or_default();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.last_failure_ms = Some(now_ms());
        state.unhealthy_until = Some(Instant::now() + cooldown.unwrap_or(self.policy.cooldown));
    }

    /// The health of each of `channel_ids`, in order.
    pub fn status<S: AsRef<str>>(&self, channel_ids: &[S]) -> Vec<ChannelHealth> {
        let reader = self.reader();
        channel_ids
            .iter()
            .map(|id| {
                let id = id.as_ref();
                let status = reader.get(id);
                ChannelHealth {
                    channel_id: id.to_owned(),
                    healthy: status.healthy,
                    consecutive_failures: status.consecutive_failures,
                    last_failure_ms: status.last_failure_ms,
                }
            })
            .collect()
    }

    /// The registry held for reading many channels under one lock. Drop it soon: writers wait.
    pub fn reader(&self) -> HealthReader<'_> {
        HealthReader {
            channels: self.lock(),
            now: Instant::now(),
        }
    }
}

/// The health of one channel, without its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStatus {
    /// False while it cools down.
    pub healthy: bool,
    /// Retryable failures since its last success.
    pub consecutive_failures: u32,
    /// When it last failed, in ms since the Unix epoch.
    pub last_failure_ms: Option<i64>,
}

impl HealthStatus {
    /// A channel with no failure on record.
    pub const HEALTHY: HealthStatus = HealthStatus {
        healthy: true,
        consecutive_failures: 0,
        last_failure_ms: None,
    };
}

/// The registry under its lock ([`HealthRegistry::reader`]).
pub struct HealthReader<'a> {
    channels: MutexGuard<'a, HashMap<String, ChannelState>>,
    now: Instant,
}

impl HealthReader<'_> {
    /// The health of `channel_id`; a channel with no record is healthy.
    pub fn get(&self, channel_id: &str) -> HealthStatus {
        match self.channels.get(channel_id) {
            None => HealthStatus::HEALTHY,
            Some(state) => HealthStatus {
                healthy: state.unhealthy_until.is_none_or(|until| until <= self.now),
                consecutive_failures: state.consecutive_failures,
                last_failure_ms: state.last_failure_ms,
            },
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_trip_at_the_threshold_and_success_resets() {
        let registry = HealthRegistry::new(HealthPolicy::default());
        registry.record_failure("c1");
        registry.record_failure("c1");
        assert!(registry.status(&["c1"])[0].healthy);
        registry.record_failure("c1");
        let after = &registry.status(&["c1"])[0];
        assert!(!after.healthy);
        assert_eq!(after.consecutive_failures, 3);
        assert!(after.last_failure_ms.is_some());
        registry.record_success("c1");
        assert!(registry.status(&["c1"])[0].healthy);
    }

    #[test]
    fn a_trip_lasts_its_cooldown_only() {
        let registry = HealthRegistry::new(HealthPolicy::default());
        registry.trip("c1", Some(Duration::ZERO));
        assert!(registry.status(&["c1"])[0].healthy);
        registry.trip("c2", None);
        let status = registry.status(&["c2", "unknown"]);
        assert!(!status[0].healthy);
        assert!(status[1].healthy);
    }
}
