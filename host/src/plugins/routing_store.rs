//! `monoize:plugin/routing-store`: the routing snapshot as routers see it — never a channel's
//! key or URL, nothing of the legacy tables (DBO4). One call answers from memory.
//!
//! `candidates` is the hot path: it answers a page of the providers the query may use (the
//! filtering is `routing::candidates`), each with only what a plan needs and its usable
//! channels' health read under one lock, so a router planning a few attempts copies a few
//! providers into the component, however large the store.

use crate::db::routing::ProviderType;
use crate::money::Multiplier;
use crate::routing::candidates::{CandidateQuery, NoCandidate, candidate_page};
use crate::routing::health::HealthReader;
use crate::routing::snapshot::{Channel, Listed, ModelEntry, Provider};
use crate::routing::{EndpointKind, HealthStatus};

use super::store::PluginState;
use super::wit::latest::routing_store::{self as wit, Host};
use super::wit::latest::types;

impl Host for PluginState {
    fn candidates(
        &mut self,
        query: wit::CandidateQuery,
    ) -> Result<wit::CandidatePage, wit::NoCandidate> {
        let Some(snapshot) = &self.capabilities.routing else {
            return Err(wit::NoCandidate::UnknownModel);
        };
        let host_query = CandidateQuery {
            model: &query.model,
            endpoint: endpoint_from_wit(query.endpoint),
            max_multiplier: query.max_multiplier.map(Multiplier::from_nanos),
            groups: query.groups.as_deref(),
        };
        let cursor = usize::try_from(query.cursor).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let page =
            candidate_page(snapshot, &host_query, cursor, limit).map_err(
                |reason| match reason {
                    NoCandidate::UnknownModel => wit::NoCandidate::UnknownModel,
                    NoCandidate::NotPermitted => wit::NoCandidate::NotPermitted,
                    NoCandidate::NoUsableChannel => wit::NoCandidate::NoUsableChannel,
                },
            )?;
        let health = self
            .capabilities
            .health
            .as_ref()
            .map(|registry| registry.reader());
        Ok(wit::CandidatePage {
            candidates: page
                .candidates
                .iter()
                .map(|listed| candidate_to_wit(listed, health.as_ref()))
                .collect(),
            next: page.next.and_then(|next| u32::try_from(next).ok()),
        })
    }

    fn providers(&mut self) -> Vec<wit::Provider> {
        let Some(snapshot) = &self.capabilities.routing else {
            return Vec::new();
        };
        snapshot.providers().iter().map(provider_to_wit).collect()
    }
}

/// A candidate with only its usable channels, each with its health.
fn candidate_to_wit(listed: &Listed<'_>, health: Option<&HealthReader<'_>>) -> wit::Candidate {
    let provider = listed.provider;
    wit::Candidate {
        provider_id: provider.id.clone(),
        priority: provider.priority,
        max_retries: provider.max_retries,
        groups: provider.groups.clone(),
        redirect: listed
            .entry
            .redirect
            .as_ref()
            .filter(|redirect| !redirect.is_empty())
            .cloned(),
        multiplier: listed.entry.multiplier.nanos(),
        channels: provider
            .channels
            .iter()
            .filter(|channel| channel.usable())
            .map(|channel| {
                let status = health.map_or(HealthStatus::HEALTHY, |health| health.get(&channel.id));
                wit::CandidateChannel {
                    id: channel.id.clone(),
                    weight: channel.weight,
                    healthy: status.healthy,
                    last_failure: status.last_failure_ms,
                }
            })
            .collect(),
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
