//! `GET /metrics`: the gateway's counters in the Prometheus text format (0.0.4).
//!
//! - `monoize_requests_total{endpoint, status}`: answered requests, and with status `499` the
//!   forwarding requests whose client went away before the answer;
//! - `monoize_upstream_attempts_total{outcome}`: upstream attempts by how they ended (see
//!   [`AttemptOutcome`]);
//! - `monoize_plugin_call_duration_seconds{plugin, call}` and
//!   `monoize_plugin_call_failures_total{plugin, call}`: each `route`, `authorize` and `settle`
//!   call, and those that failed (a trap, a timeout, a broken contract or a billing fault; a
//!   router's refusal or billing's `402` is an answer, not a failure). A `route` call is timed
//!   with the host's check of its plan, which takes microseconds;
//! - `monoize_charge_commit_duration_seconds`: from the settle phase's start until the
//!   charge is committed (the settle call answers only then), group-commit wait included;
//! - `monoize_requests_in_flight`: requests being served, streams until their last byte;
//! - `monoize_plugin_instances_started_total{plugin}` and `monoize_plugin_instances_idle{plugin}`:
//!   instances each plugin has started and how many wait for their next call, read from the
//!   plugins at each scrape (a reused instance serves many calls, see `plugins::instances`).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: atomics for the
//! values, a label-set map per family, and a 0.0.4 text encoder. With default features it
//! brings only small crates (`parking_lot` with `lock_api` and `parking_lot_core`, `dtoa`, its
//! label-set derive macro on the `syn` already here; `itoa` was here too). Hand-writing the
//! exposition's escaping and histogram layout would be more code to get wrong.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::plugins::instances::InstanceCounts;
use crate::routing::EndpointKind;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A plugin call the gateway makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginCall {
    /// The router's `route`.
    Route,
    /// Billing's `authorize`.
    Authorize,
    /// Billing's `settle`.
    Settle,
}

impl PluginCall {
    fn label(self) -> &'static str {
        match self {
            PluginCall::Route => "route",
            PluginCall::Authorize => "authorize",
            PluginCall::Settle => "settle",
        }
    }
}

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It served the request.
    Served,
    /// A refusal the request caused (`400`, `413`, `422` and the other client errors that are
    /// not the channel's), passed through.
    Rejected,
    /// `401` or `403`: the channel's key is bad.
    BadKey,
    /// `429`.
    RateLimited,
    /// Any other non-success status.
    UpstreamStatus,
    /// No headers (or first stream chunk) in time.
    Timeout,
    /// The connection failed (refused, reset, TLS).
    ConnectionFailed,
    /// A stream broke or ended before its first chunk.
    StreamFailed,
    /// A whole body broke off or stalled past the idle timeout.
    BodyFailed,
    /// A whole answer larger than the gateway holds (no one's fault; not retried).
    TooLarge,
    /// The request could not be built for the channel (a bad URL or key).
    BadChannel,
    /// A success status over a web page (`text/html`) or a whole body that is not JSON, not an
    /// API's answer: a `base_url` that points at a website, a broken upstream.
    NotAnApi,
}

impl AttemptOutcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Served => "served",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::BadKey => "bad_key",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::UpstreamStatus => "upstream_status",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ConnectionFailed => "connection_failed",
            AttemptOutcome::StreamFailed => "stream_failed",
            AttemptOutcome::BodyFailed => "body_failed",
            AttemptOutcome::TooLarge => "too_large",
            AttemptOutcome::BadChannel => "bad_channel",
            AttemptOutcome::NotAnApi => "not_an_api",
        }
    }
}

/// The `endpoint` label of a forwarding endpoint.
pub fn endpoint_label(endpoint: EndpointKind) -> &'static str {
    match endpoint {
        EndpointKind::ChatCompletions => "chat_completions",
        EndpointKind::Responses => "responses",
        EndpointKind::Embeddings => "embeddings",
        EndpointKind::Messages => "messages",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    call: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    thread: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    plugin: String,
}

/// Where a plugin's [`InstanceCounts`] are read from at each scrape.
pub type InstanceSource = Box<dyn Fn() -> InstanceCounts + Send + Sync>;

/// The plugins whose instances `/metrics` reports, read at each scrape.
#[derive(Default)]
struct InstanceWatch {
    sources: Mutex<Vec<(String, InstanceSource)>>,
}

impl std::fmt::Debug for InstanceWatch {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str("InstanceWatch")
    }
}

impl Collector for InstanceWatch {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<(InstanceLabels, InstanceCounts)> = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(plugin, source)| {
                let plugin = plugin.clone();
                (InstanceLabels { plugin }, source())
            })
            .collect();
        let mut started = encoder.encode_descriptor(
            "plugin_instances_started",
            "Plugin instances started, by plugin (an instance serves many calls)",
            None,
            MetricType::Counter,
        )?;
        for (labels, counts) in &counts {
            ConstCounter::new(counts.started).encode(started.encode_family(labels)?)?;
        }
        let mut idle = encoder.encode_descriptor(
            "plugin_instances_idle",
            "Plugin instances waiting for their next call, by plugin",
            None,
            MetricType::Gauge,
        )?;
        for (labels, counts) in &counts {
            let waiting = i64::try_from(counts.idle).unwrap_or(i64::MAX);
            ConstGauge::new(waiting).encode(idle.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    provider: String,
    channel: String,
}

/// One channel's health at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReport {
    /// Its provider's name.
    pub provider: String,
    /// Its name.
    pub channel: String,
    /// False while it cools down.
    pub healthy: bool,
    /// Retryable failures since its last success.
    pub consecutive_failures: u32,
}

/// Where the channels' health is read from at each scrape.
pub type ChannelSource = Box<dyn Fn() -> Vec<ChannelReport> + Send + Sync>;

/// The channels `/metrics` reports the health of, read at each scrape (nothing on the request
/// path counts into it).
#[derive(Default)]
struct ChannelWatch {
    source: Mutex<Option<ChannelSource>>,
}

impl std::fmt::Debug for ChannelWatch {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str("ChannelWatch")
    }
}

impl Collector for ChannelWatch {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|source| source())
            .unwrap_or_default();
        let labelled: Vec<(ChannelLabels, &ChannelReport)> = reports
            .iter()
            .map(|report| {
                let labels = ChannelLabels {
                    provider: report.provider.clone(),
                    channel: report.channel.clone(),
                };
                (labels, report)
            })
            .collect();
        let mut healthy = encoder.encode_descriptor(
            "channel_healthy",
            "1 while a channel takes requests, 0 while it cools down after failing, by provider and channel",
            None,
            MetricType::Gauge,
        )?;
        for (labels, report) in &labelled {
            ConstGauge::new(i64::from(report.healthy)).encode(healthy.encode_family(labels)?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "channel_consecutive_failures",
            "Retryable failures of a channel since its last success, by provider and channel",
            None,
            MetricType::Gauge,
        )?;
        for (labels, report) in &labelled {
            ConstGauge::new(i64::from(report.consecutive_failures))
                .encode(failures.encode_family(labels)?)?;
        }
        Ok(())
    }
}

fn plugin_histogram() -> Histogram {
    // 25 µs to about 0.8 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// The gateway's metrics; cheap to clone, every clone counts into the same values.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    plugin_calls: Family<PluginLabels, Histogram, fn() -> Histogram>,
    plugin_failures: Family<PluginLabels, Counter>,
    charge_commit: Histogram,
    in_flight: Gauge,
    connections: Family<ThreadLabels, Gauge>,
    instances: Arc<InstanceWatch>,
    channels: Arc<ChannelWatch>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let plugin_calls: Family<PluginLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(plugin_histogram);
        let plugin_failures = Family::<PluginLabels, Counter>::default();
        let charge_commit = Histogram::new(exponential_buckets(0.000_1, 2.0, 14));
        let in_flight = Gauge::default();
        let connections = Family::<ThreadLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("monoize");
        registry.register(
            "requests",
            "Requests answered, by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Upstream attempts, by how they ended",
            attempts.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Plugin calls, by plugin and call",
            Unit::Seconds,
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_failures",
            "Plugin calls that failed (trap, timeout, contract violation, fault)",
            plugin_failures.clone(),
        );
        registry.register_with_unit(
            "charge_commit_duration",
            "From the settle phase's start until its charge is committed",
            Unit::Seconds,
            charge_commit.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being served (streams until their last byte)",
            in_flight.clone(),
        );
        registry.register(
            "server_connections_open",
            "Client connections open, by the connection thread serving them",
            connections.clone(),
        );
        let instances = Arc::new(InstanceWatch::default());
        registry.register_collector(Box::new(Arc::clone(&instances)));
        let channels = Arc::new(ChannelWatch::default());
        registry.register_collector(Box::new(Arc::clone(&channels)));
        Metrics {
            registry: Arc::new(registry),
            requests,
            attempts,
            plugin_calls,
            plugin_failures,
            charge_commit,
            in_flight,
            connections,
            instances,
            channels,
        }
    }

    /// The open-connection count of connection thread `thread`: the server's threads count
    /// into it themselves (see `server::threads`).
    pub fn connections_open(&self, thread: usize) -> Gauge {
        let thread = u64::try_from(thread).unwrap_or(u64::MAX);
        self.connections
            .get_or_create(&ThreadLabels { thread })
            .clone()
    }

    /// Reports the instances of `plugin`, read from `source` at each scrape.
    pub fn watch_instances(&self, plugin: &str, source: InstanceSource) {
        self.instances
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((plugin.to_owned(), source));
    }

    /// Reports the channels' health, read from `source` at each scrape.
    pub fn watch_channels(&self, source: ChannelSource) {
        *self
            .channels
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Counts a request answered on `endpoint` (a label of [`endpoint_label`], or `models`).
    pub fn request(&self, endpoint: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
    }

    /// Counts one upstream attempt.
    pub fn attempt(&self, outcome: AttemptOutcome) {
        self.attempts
            .get_or_create(&AttemptLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Records a call of `plugin` that took `took`; `failed` when it failed.
    pub fn plugin_call(&self, plugin: &str, call: PluginCall, took: Duration, failed: bool) {
        let labels = PluginLabels {
            plugin: plugin.to_owned(),
            call: call.label(),
        };
        self.plugin_calls
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.plugin_failures.get_or_create(&labels).inc();
        }
    }

    /// Records how long a charge took to be committed.
    pub fn charge_committed(&self, took: Duration) {
        self.charge_commit.observe(took.as_secs_f64());
    }

    /// Counts a request as in flight, here and on this thread (see
    /// [`in_flight_on_this_thread`]), until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        let here = IN_FLIGHT_HERE.with(Arc::clone);
        here.fetch_add(1, Ordering::Relaxed);
        InFlight {
            gauge: self.in_flight.clone(),
            here,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_text::encode(&mut text, &self.registry) {
            // Writing into a String cannot fail; a label that cannot be encoded would.
            tracing::warn!(%error, "encoding the metrics failed");
        }
        text
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
    /// The count of the thread it began on, wherever it ends.
    here: Arc<AtomicUsize>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
        self.here.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Requests in flight that began on this thread.
    static IN_FLIGHT_HERE: Arc<AtomicUsize> = Arc::default();
}

/// How many requests that began on this thread are in flight. On a connection thread (which
/// keeps every request it began) that is its load: the ledger writer asks it before a caller
/// commits on its own thread.
pub fn in_flight_on_this_thread() -> usize {
    IN_FLIGHT_HERE.with(|here| here.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_and_moves() {
        let metrics = Metrics::new();
        metrics.request("chat_completions", 200);
        metrics.attempt(AttemptOutcome::Timeout);
        metrics.plugin_call(
            "router",
            PluginCall::Route,
            Duration::from_micros(80),
            false,
        );
        metrics.plugin_call(
            "billing",
            PluginCall::Settle,
            Duration::from_millis(2),
            true,
        );
        metrics.charge_committed(Duration::from_millis(3));
        let guard = metrics.in_flight();
        let text = metrics.render();
        for line in [
            "monoize_requests_total{endpoint=\"chat_completions\",status=\"200\"} 1",
            "monoize_upstream_attempts_total{outcome=\"timeout\"} 1",
            "monoize_plugin_call_duration_seconds_count{plugin=\"router\",call=\"route\"} 1",
            "monoize_plugin_call_failures_total{plugin=\"billing\",call=\"settle\"} 1",
            "monoize_charge_commit_duration_seconds_count 1",
            "monoize_requests_in_flight 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        drop(guard);
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l == "monoize_requests_in_flight 0")
        );
    }
}
