//! Shared helpers for the end-to-end tests and benches: routing fixtures built the way an
//! operator would configure them, and a plugin engine with the production limits.

#![allow(
    clippy::panic,
    reason = "test helpers fail the test at once on a broken fixture"
)]

pub mod mock_proxy;
pub mod mock_upstream;

use std::sync::Arc;

use monoize::db::routing::ProviderType;
use monoize::money::Multiplier;
use monoize::plugins::{EngineSettings, PluginEngine, PluginLimits};
use monoize::routing::snapshot::{Channel, ChannelKey, ModelEntry, Provider};
use monoize::routing::{EndpointKind, RouteRequest, RoutingSnapshot};

/// A provider under construction: chat-completion type, enabled, `max_retries` -1, no groups.
#[derive(Debug, Clone)]
pub struct ProviderFixture(Provider);

impl ProviderFixture {
    /// A provider `id` at `priority`.
    pub fn new(id: &str, priority: i64) -> Self {
        ProviderFixture(Provider {
            id: id.to_owned(),
            name: format!("provider {id}"),
            provider_type: ProviderType::ChatCompletion,
            enabled: true,
            priority,
            max_retries: -1,
            groups: Vec::new(),
            models: Vec::new(),
            channels: Vec::new(),
        })
    }

    /// Lists `model` at `multiplier` (an exact decimal string).
    pub fn model(self, model: &str, multiplier: &str) -> Self {
        self.redirect(model, None, multiplier)
    }

    /// Lists `model`, sent upstream as `redirect`, at `multiplier`.
    pub fn redirect(mut self, model: &str, redirect: Option<&str>, multiplier: &str) -> Self {
        self.0.models.push(ModelEntry {
            model: model.to_owned(),
            redirect: redirect.map(str::to_owned),
            multiplier: parse_multiplier(multiplier),
        });
        self
    }

    /// Adds an enabled channel `id` of `weight`.
    pub fn channel(self, id: &str, weight: u32) -> Self {
        self.channel_with(id, weight, true)
    }

    /// Adds a channel `id` of `weight`, enabled or not.
    pub fn channel_with(mut self, id: &str, weight: u32, enabled: bool) -> Self {
        self.0.channels.push(Channel {
            id: id.to_owned(),
            name: format!("channel {id}"),
            base_url: "http://127.0.0.1:9".to_owned(),
            api_key: ChannelKey::new(format!("sk-upstream-secret-{id}")),
            weight,
            enabled,
        });
        self
    }

    /// Puts the provider in `groups`.
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.0.groups = groups.iter().map(|group| (*group).to_owned()).collect();
        self
    }

    /// Sets `max_retries`.
    pub fn max_retries(mut self, max_retries: i32) -> Self {
        self.0.max_retries = max_retries;
        self
    }

    /// Sets the wire format.
    pub fn provider_type(mut self, provider_type: ProviderType) -> Self {
        self.0.provider_type = provider_type;
        self
    }

    /// Disables the provider.
    pub fn disabled(mut self) -> Self {
        self.0.enabled = false;
        self
    }

    /// The provider.
    pub fn build(self) -> Provider {
        self.0
    }
}

fn parse_multiplier(text: &str) -> Multiplier {
    match text.parse() {
        Ok(multiplier) => multiplier,
        Err(error) => panic!("fixture multiplier {text:?}: {error}"),
    }
}

/// A snapshot of `providers`.
pub fn snapshot(providers: Vec<ProviderFixture>) -> Arc<RoutingSnapshot> {
    Arc::new(RoutingSnapshot::new(
        providers.into_iter().map(ProviderFixture::build).collect(),
    ))
}

/// `providers` providers at priorities 0.., each serving `model` at multiplier 1 through
/// `channels` channels of weight 1..=channels: the shape of the routing benchmarks and of the
/// large conformance fixture.
pub fn synthetic_snapshot(providers: usize, channels: usize, model: &str) -> Arc<RoutingSnapshot> {
    snapshot(
        (0..providers)
            .map(|p| {
                let priority = i64::try_from(p).unwrap_or(i64::MAX);
                (0..channels).fold(
                    ProviderFixture::new(&format!("p{p:04}"), priority).model(model, "1"),
                    |provider, c| {
                        let weight = u32::try_from(c + 1).unwrap_or(u32::MAX);
                        provider.channel(&format!("p{p:04}-c{c}"), weight)
                    },
                )
            })
            .collect(),
    )
}

/// A chat-completions request for `model` with seed 0, no ceiling and no groups.
pub fn request(model: &str) -> RouteRequest {
    RouteRequest {
        request_id: "req-test".to_owned(),
        model: model.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        max_multiplier: None,
        groups: None,
        seed: 0,
    }
}

/// A plugin engine with the production limits, except a time bound of 5 s: tests run many
/// calls in parallel on few cores, where a 50 ms wall-clock bound would fail them at random.
/// The time bound itself is proven by a test that sets its own.
pub fn engine() -> PluginEngine {
    engine_with(PluginLimits {
        timeout: std::time::Duration::from_secs(5),
        ..PluginLimits::default()
    })
}

/// A plugin engine with `limits` and no on-disk cache.
pub fn engine_with(limits: PluginLimits) -> PluginEngine {
    match PluginEngine::new(&EngineSettings {
        limits,
        cache_dir: None,
    }) {
        Ok(engine) => engine,
        Err(error) => panic!("plugin engine: {error}"),
    }
}

/// The bytes of the guest component at `path` (one of `monoize::plugins::embedded::paths`).
pub fn component(path: &str) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => panic!("guest component {path}: {error}"),
    }
}
