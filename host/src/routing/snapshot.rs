//! The routing snapshot: the three routing tables (DBO3) as one immutable, indexed value in
//! memory. Routers read it through the `routing-store` interface on every request, so a
//! route costs no SQL; every routing write builds a new snapshot and swaps it in whole.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::db::routing::{ProviderType, RoutingRows};
use crate::money::Multiplier;

/// A channel's upstream key. Its `Debug` never shows it; only the forwarder reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelKey(String);

impl ChannelKey {
    /// Wraps a key.
    pub fn new(key: String) -> Self {
        ChannelKey(key)
    }

    /// The key, for the upstream request's auth header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("ChannelKey(<redacted>)")
    }
}

/// A channel as routing knows it.
#[derive(Debug, Clone)]
pub struct Channel {
    /// `monoize_channels.id`.
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// The upstream origin.
    pub base_url: String,
    /// The upstream key; never handed to a plugin.
    pub api_key: ChannelKey,
    /// Relative share of traffic.
    pub weight: u32,
    /// Whether it may be tried.
    pub enabled: bool,
}

impl Channel {
    /// Whether a plan may use it: enabled, with a weight above zero.
    pub fn usable(&self) -> bool {
        self.enabled && self.weight > 0
    }
}

/// A provider's entry for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The logical model name.
    pub model: String,
    /// The upstream name, when it differs.
    pub redirect: Option<String>,
    /// The price multiplier.
    pub multiplier: Multiplier,
}

impl ModelEntry {
    /// The name to send upstream: the non-empty redirect, else the model itself.
    pub fn upstream_model(&self) -> &str {
        match self.redirect.as_deref() {
            Some(redirect) if !redirect.is_empty() => redirect,
            _ => &self.model,
        }
    }
}

/// A provider with its models and channels.
#[derive(Debug, Clone)]
pub struct Provider {
    /// `monoize_providers.id`.
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// Its wire format.
    pub provider_type: ProviderType,
    /// Whether it may be tried.
    pub enabled: bool,
    /// Ordering key, lowest first.
    pub priority: i64,
    /// Retries on other channels; -1 for all.
    pub max_retries: i32,
    /// Its groups; empty: open to every key.
    pub groups: Vec<String>,
    /// Its models, by logical name.
    pub models: Vec<ModelEntry>,
    /// Its channels, in id order.
    pub channels: Vec<Channel>,
}

impl Provider {
    /// Its entry for `model`, if it lists it.
    pub fn entry(&self, model: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|entry| entry.model == model)
    }

    /// Its channel `channel_id`, if it has it.
    pub fn channel(&self, channel_id: &str) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|channel| channel.id == channel_id)
    }
}

/// A provider's listing of one model: the provider and its entry for the model.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The provider.
    pub provider: &'a Provider,
    /// Its entry for the model.
    pub entry: &'a ModelEntry,
}

/// Where a listing is: the provider's position in the snapshot, and its entry's in the provider.
#[derive(Debug, Clone, Copy)]
struct Listing {
    provider: usize,
    entry: usize,
}

/// The routing tables, indexed for the questions routing asks.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    providers: Vec<Provider>,
    provider_index: HashMap<String, usize>,
    /// Per model, its listings in provider order: a route finds its candidates and their
    /// entries without scanning other providers or their other models.
    providers_by_model: HashMap<String, Vec<Listing>>,
}

impl RoutingSnapshot {
    /// Builds a snapshot from providers; they are put in `priority` order, ties by id.
    pub fn new(mut providers: Vec<Provider>) -> Self {
        providers.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        let provider_index = providers
            .iter()
            .enumerate()
            .map(|(index, provider)| (provider.id.clone(), index))
            .collect();
        let mut providers_by_model: HashMap<String, Vec<Listing>> = HashMap::new();
        for (index, provider) in providers.iter().enumerate() {
            for (position, entry) in provider.models.iter().enumerate() {
                let listings = providers_by_model.entry(entry.model.clone()).or_default();
                // A provider lists a model once; should it twice, its first entry answers, as
                // `Provider::entry` does.
                if listings.last().is_none_or(|last| last.provider != index) {
                    listings.push(Listing {
                        provider: index,
                        entry: position,
                    });
                }
            }
        }
        RoutingSnapshot {
            providers,
            provider_index,
            providers_by_model,
        }
    }

    /// Builds a snapshot from the rows of the routing tables. A row that points at a missing
    /// provider cannot exist (foreign keys) and is skipped if it ever does.
    pub fn from_rows(rows: RoutingRows) -> Self {
        let mut providers: Vec<Provider> = rows
            .providers
            .into_iter()
            .map(|row| Provider {
                id: row.id,
                name: row.name,
                provider_type: row.provider_type,
                enabled: row.enabled,
                priority: row.priority,
                max_retries: row.max_retries,
                groups: row.groups,
                models: Vec::new(),
                channels: Vec::new(),
            })
            .collect();
        let index: HashMap<String, usize> = providers
            .iter()
            .enumerate()
            .map(|(position, provider)| (provider.id.clone(), position))
            .collect();
        for model in rows.models {
            if let Some(&position) = index.get(&model.provider_id) {
                providers[position].models.push(ModelEntry {
                    model: model.model_name,
                    redirect: model.redirect,
                    multiplier: model.multiplier,
                });
            }
        }
        for channel in rows.channels {
            if let Some(&position) = index.get(&channel.provider_id) {
                providers[position].channels.push(Channel {
                    id: channel.id,
                    name: channel.name,
                    base_url: channel.base_url,
                    api_key: ChannelKey::new(channel.api_key),
                    weight: channel.weight,
                    enabled: channel.enabled,
                });
            }
        }
        for provider in &mut providers {
            provider.channels.sort_by(|a, b| a.id.cmp(&b.id));
        }
        RoutingSnapshot::new(providers)
    }

    /// Every provider, in priority order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The provider `id`.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.provider_index
            .get(id)
            .map(|&index| &self.providers[index])
    }

    /// Every provider that lists `model`, whatever its wire format, with its entry for it, in
    /// priority order, disabled ones included.
    pub fn listings<'a>(&'a self, model: &str) -> impl ExactSizeIterator<Item = Listed<'a>> + 'a {
        self.providers_by_model
            .get(model)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|listing| {
                // Both positions were taken from these very vectors when the snapshot was built.
                let provider = &self.providers[listing.provider];
                Listed {
                    provider,
                    entry: &provider.models[listing.entry],
                }
            })
    }

    /// The sorted distinct logical models that an enabled provider serves through an enabled
    /// channel of weight > 0, for a key with `ceiling` and `groups` (the rules of
    /// [`super::groups_permit`]): only providers open to its groups, and of those only the
    /// models whose multiplier is within its ceiling (what `GET /v1/models` lists).
    pub fn servable_models(
        &self,
        ceiling: Option<Multiplier>,
        groups: Option<&[String]>,
    ) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .providers
            .iter()
            .filter(|provider| provider.enabled)
            .filter(|provider| provider.channels.iter().any(|c| c.enabled && c.weight > 0))
            .filter(|provider| super::groups_permit(groups, &provider.groups))
            .flat_map(|provider| {
                provider
                    .models
                    .iter()
                    .filter(|entry| ceiling.is_none_or(|ceiling| entry.multiplier <= ceiling))
                    .map(|entry| entry.model.as_str())
            })
            .collect();
        models.sort_unstable();
        models.dedup();
        models
    }
}

/// The current snapshot, shared by every request; a routing write swaps in a new one.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot(Arc<RwLock<Arc<RoutingSnapshot>>>);

impl SharedSnapshot {
    /// Starts with `snapshot`.
    pub fn new(snapshot: RoutingSnapshot) -> Self {
        SharedSnapshot(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    /// The snapshot in force now. Holding it keeps it alive across a concurrent swap.
    pub fn current(&self) -> Arc<RoutingSnapshot> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `snapshot` in force for every request that starts from now on.
    pub fn replace(&self, snapshot: RoutingSnapshot) {
        let fresh = Arc::new(snapshot);
        match self.0.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }
}
