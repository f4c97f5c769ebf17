//! `monoize:plugin/routing-store`: the routing snapshot as routers see it — never a channel's
//! key or URL, nothing of the legacy tables (DBO4). One call answers from memory.

use crate::db::routing::ProviderType;
use crate::routing::EndpointKind;
use crate::routing::snapshot::{Channel, ModelEntry, Provider};

use super::store::PluginState;
use super::wit::latest::routing_store::{self as wit, Host};
use super::wit::latest::types;

impl Host for PluginState {
    fn candidates(&mut self, model: String, endpoint: types::EndpointKind) -> Vec<wit::Candidate> {
        let Some(snapshot) = &self.capabilities.routing else {
            return Vec::new();
        };
        snapshot
            .candidates(&model, endpoint_from_wit(endpoint))
            .filter_map(|provider| {
                let entry = provider.entry(&model)?;
                Some(wit::Candidate {
                    provider_id: provider.id.clone(),
                    provider_name: provider.name.clone(),
                    provider_type: provider_type_to_wit(provider.provider_type),
                    enabled: provider.enabled,
                    priority: provider.priority,
                    max_retries: provider.max_retries,
                    groups: provider.groups.clone(),
                    entry: model_entry_to_wit(entry),
                    channels: provider.channels.iter().map(channel_to_wit).collect(),
                })
            })
            .collect()
    }

    fn providers(&mut self) -> Vec<wit::Provider> {
        let Some(snapshot) = &self.capabilities.routing else {
            return Vec::new();
        };
        snapshot.providers().iter().map(provider_to_wit).collect()
    }
}

fn provider_to_wit(provider: &Provider) -> wit::Provider {
    wit::Provider {
        id: provider.id.clone(),
        name: provider.name.clone(),
        provider_type: provider_type_to_wit(provider.provider_type),
        enabled: provider.enabled,
        priority: provider.priority,
        max_retries: provider.max_retries,
        groups: provider.groups.clone(),
        models: provider.models.iter().map(model_entry_to_wit).collect(),
        channels: provider.channels.iter().map(channel_to_wit).collect(),
    }
}

fn model_entry_to_wit(entry: &ModelEntry) -> wit::ModelEntry {
    wit::ModelEntry {
        model: entry.model.clone(),
        redirect: entry.redirect.clone(),
        multiplier: entry.multiplier.nanos(),
    }
}

/// A channel without its key or URL: those stay in the host.
fn channel_to_wit(channel: &Channel) -> wit::Channel {
    wit::Channel {
        id: channel.id.clone(),
        name: channel.name.clone(),
        weight: channel.weight,
        enabled: channel.enabled,
    }
}

/// The host's endpoint kind for the WIT one.
pub(crate) fn endpoint_from_wit(endpoint: types::EndpointKind) -> EndpointKind {
    match endpoint {
        types::EndpointKind::ChatCompletions => EndpointKind::ChatCompletions,
        types::EndpointKind::Responses => EndpointKind::Responses,
        types::EndpointKind::Embeddings => EndpointKind::Embeddings,
        types::EndpointKind::Messages => EndpointKind::Messages,
    }
}

/// The WIT endpoint kind for the host's.
pub(crate) fn endpoint_to_wit(endpoint: EndpointKind) -> types::EndpointKind {
    match endpoint {
        EndpointKind::ChatCompletions => types::EndpointKind::ChatCompletions,
        EndpointKind::Responses => types::EndpointKind::Responses,
        EndpointKind::Embeddings => types::EndpointKind::Embeddings,
        EndpointKind::Messages => types::EndpointKind::Messages,
    }
}

fn provider_type_to_wit(provider_type: ProviderType) -> types::ProviderType {
    match provider_type {
        ProviderType::Responses => types::ProviderType::Responses,
        ProviderType::ChatCompletion => types::ProviderType::ChatCompletion,
        ProviderType::Messages => types::ProviderType::Messages,
        ProviderType::Gemini => types::ProviderType::Gemini,
        ProviderType::Grok => types::ProviderType::Grok,
    }
}
