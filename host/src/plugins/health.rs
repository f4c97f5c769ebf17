//! `monoize:plugin/health`: channel health from the host's passive health registry, for all
//! the asked channels in one call.

use super::store::PluginState;
use super::wit::latest::health::{ChannelHealth, Host};

/// Channels one call may ask about; the rest of a longer list reads as healthy.
const MAX_CHANNELS_PER_CALL: usize = 100_000;

impl Host for PluginState {
    fn channels(&mut self, _model: String, channel_ids: Vec<String>) -> Vec<ChannelHealth> {
        let Some(registry) = &self.capabilities.health else {
            return channel_ids.into_iter().map(healthy).collect();
        };
        let asked = channel_ids.len().min(MAX_CHANNELS_PER_CALL);
        let mut answers: Vec<ChannelHealth> = registry
            .status(&channel_ids[..asked])
            .into_iter()
            .map(|status| ChannelHealth {
                channel_id: status.channel_id,
                healthy: status.healthy,
                consecutive_failures: status.consecutive_failures,
                last_failure: status.last_failure_ms,
            })
            .collect();
        answers.extend(channel_ids.into_iter().skip(asked).map(healthy));
        answers
    }
}

fn healthy(channel_id: String) -> ChannelHealth {
    ChannelHealth {
        channel_id,
        healthy: true,
        consecutive_failures: 0,
        last_failure: None,
    }
}
