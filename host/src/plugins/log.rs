//! `monoize:plugin/log`: plugin lines go to the host's tracing log, tagged with the plugin
//! and the request, cut at 4 KiB, and at most [`LOG_LINES_PER_CALL`] per call.
//!
//! [`LOG_LINES_PER_CALL`]: super::store::LOG_LINES_PER_CALL

use super::store::PluginState;
use super::wit::latest::log::{Host, Level};

const MAX_MESSAGE_BYTES: usize = 4096;

impl Host for PluginState {
    fn write(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let plugin = &*self.plugin;
        let request_id = self.request_id.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, request_id, "{message}"),
            Level::Debug => tracing::debug!(plugin, request_id, "{message}"),
            Level::Info => tracing::info!(plugin, request_id, "{message}"),
            Level::Warn => tracing::warn!(plugin, request_id, "{message}"),
            Level::Error => tracing::error!(plugin, request_id, "{message}"),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
