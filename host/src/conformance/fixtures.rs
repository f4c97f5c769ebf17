//! Routing fixtures for the conformance suites, written through the real repository functions
//! into a private in-memory database and read back as the snapshot routers see.

use std::sync::Arc;

use crate::db::routing::{self, ChannelInput, ModelInput, ProviderInput, ProviderType};
use crate::db::{Database, DbError};
use crate::routing::RoutingSnapshot;

/// A provider fixture: name, priority, type, enabled, groups, models, channels.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    input: ProviderInput,
}

impl ProviderSpec {
    /// An enabled chat-completion provider `name` at `priority`, retrying on every channel.
    pub fn new(name: &str, priority: i64) -> Self {
        ProviderSpec {
            input: ProviderInput {
                name: name.to_owned(),
                provider_type: ProviderType::ChatCompletion,
                max_retries: -1,
                transforms_json: "[]".to_owned(),
                groups: Vec::new(),
                enabled: true,
                priority: Some(priority),
                models: Vec::new(),
                channels: Vec::new(),
            },
        }
    }

    /// Lists `model` at `multiplier` (exact nanos), sent upstream as `redirect` when given.
    pub fn model(mut self, model: &str, redirect: Option<&str>, multiplier_nanos: u64) -> Self {
        self.input.models.push(ModelInput {
            model_name: model.to_owned(),
            redirect: redirect.map(str::to_owned),
            multiplier: crate::money::Multiplier::from_nanos(multiplier_nanos),
        });
        self
    }

    /// Adds a channel `name` of `weight`, enabled or not.
    pub fn channel(mut self, name: &str, weight: u32, enabled: bool) -> Self {
        self.input.channels.push(ChannelInput {
            id: None,
            name: name.to_owned(),
            base_url: "http://127.0.0.1:9".to_owned(),
            api_key: Some(format!("sk-fixture-{name}")),
            weight,
            enabled,
        });
        self
    }

    /// Sets the groups.
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.input.groups = groups.iter().map(|group| (*group).to_owned()).collect();
        self
    }

    /// Sets the wire format.
    pub fn provider_type(mut self, provider_type: ProviderType) -> Self {
        self.input.provider_type = provider_type;
        self
    }

    /// Sets `max_retries`.
    pub fn max_retries(mut self, max_retries: i32) -> Self {
        self.input.max_retries = max_retries;
        self
    }

    /// Disables the provider.
    pub fn disabled(mut self) -> Self {
        self.input.enabled = false;
        self
    }
}

/// 10^9: the multiplier 1 in nanos.
pub const ONE: u64 = 1_000_000_000;

/// Writes `providers` into a fresh in-memory database and returns its routing snapshot.
pub async fn store(providers: Vec<ProviderSpec>) -> Result<Arc<RoutingSnapshot>, DbError> {
    let db = Database::open_in_memory()?;
    db.write(move |tx| {
        providers
            .iter()
            .try_for_each(|spec| routing::create_provider(tx, &spec.input).map(drop))
    })
    .await?;
    let rows = db.read(routing::load_routing_rows).await?;
    Ok(Arc::new(RoutingSnapshot::from_rows(rows)))
}

/// Store F: providers of every shape a router meets — priorities out of order, multipliers
/// 0.5/1/1.25/2, groups none/["a"]/["a","b"]/["b"], a disabled provider, a `messages` and a
/// `responses` provider, weights 0/1/2/3, a disabled channel, a redirect, and a provider with
/// no usable channel.
pub fn varied_store() -> Vec<ProviderSpec> {
    vec![
        ProviderSpec::new("alpha", 0)
            .model("gpt-4o", None, ONE)
            .model("gpt-4o-mini", None, ONE / 2)
            .channel("a1", 1, true)
            .channel("a2", 3, true)
            .channel("a3", 0, true)
            .channel("a4", 2, false),
        ProviderSpec::new("beta", 10)
            .model("gpt-4o", Some("gpt-4o-2024-08-06"), ONE + ONE / 4)
            .channel("b1", 1, true)
            .groups(&["a"]),
        ProviderSpec::new("gamma", 20)
            .model("gpt-4o", None, 2 * ONE)
            .model("gpt-4o-mini", None, 2 * ONE)
            .channel("g1", 1, true)
            .channel("g2", 1, true)
            .groups(&["a", "b"])
            .max_retries(0),
        ProviderSpec::new("delta", 5)
            .model("gpt-4o", None, ONE / 2)
            .channel("d1", 1, true)
            .disabled(),
        ProviderSpec::new("claude", 0)
            .model("claude-sonnet", None, ONE)
            .channel("c1", 1, true)
            .provider_type(ProviderType::Messages),
        ProviderSpec::new("responses", 30)
            .model("gpt-4o", None, ONE)
            .channel("r1", 1, true)
            .channel("r2", 0, true)
            .groups(&["b"])
            .provider_type(ProviderType::Responses),
        ProviderSpec::new("only-dead", 40)
            .model("gpt-4o-mini", None, ONE)
            .channel("z1", 0, true),
    ]
}

/// The logical models of [`varied_store`].
pub const VARIED_MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "claude-sonnet"];

/// `providers` providers at priorities 0.., each serving `model` at multiplier 1 through
/// `channels` channels of weights 1..=channels.
pub fn large_store(providers: usize, channels: usize, model: &str) -> Vec<ProviderSpec> {
    (0..providers)
        .map(|p| {
            let priority = i64::try_from(p).unwrap_or(i64::MAX);
            (0..channels).fold(
                ProviderSpec::new(&format!("p{p:04}"), priority).model(model, None, ONE),
                |spec, c| {
                    spec.channel(
                        &format!("p{p:04}-c{c}"),
                        u32::try_from(c + 1).unwrap_or(1),
                        true,
                    )
                },
            )
        })
        .collect()
}
