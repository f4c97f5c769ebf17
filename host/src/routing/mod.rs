//! Routing, as the host sees it: the in-memory snapshot of the routing tables that routers
//! read, the candidate queries answered from it, the passive health of channels, and the
//! validation that every plan passes before the host acts on it. The routing *policy* is not here: it is the router plugin's.

pub mod candidates;
pub mod health;
pub mod snapshot;
pub mod validate;

use crate::db::routing::ProviderType;
use crate::money::Multiplier;

pub use candidates::{CandidatePage, CandidateQuery, NoCandidate, candidate_page};
pub use health::{ChannelHealth, HealthPolicy, HealthRegistry, HealthStatus};
pub use snapshot::{RoutingSnapshot, SharedSnapshot};
pub use validate::{PlanViolation, validate_plan};

/// The downstream API a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages`.
    Messages,
}

impl EndpointKind {
    /// Every endpoint kind.
    pub const ALL: [EndpointKind; 4] = [
        EndpointKind::ChatCompletions,
        EndpointKind::Responses,
        EndpointKind::Embeddings,
        EndpointKind::Messages,
    ];

    /// Whether a provider of `provider_type` speaks this endpoint's wire format. Bodies are
    /// forwarded untouched, so this is the one place that decides which providers may serve
    /// which endpoint (the WIT `endpoint-kind` documents the same table).
    pub fn accepts(self, provider_type: ProviderType) -> bool {
        use ProviderType as P;
        match self {
            EndpointKind::ChatCompletions => {
                matches!(provider_type, P::ChatCompletion | P::Grok | P::Gemini)
            }
            EndpointKind::Embeddings => matches!(
                provider_type,
                P::ChatCompletion | P::Grok | P::Gemini | P::Responses
            ),
            EndpointKind::Responses => provider_type == P::Responses,
            EndpointKind::Messages => provider_type == P::Messages,
        }
    }
}

/// What the host asks a router to plan for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    /// The request's id.
    pub request_id: String,
    /// The logical model asked for.
    pub model: String,
    /// The endpoint it arrived on.
    pub endpoint: EndpointKind,
    /// The effective multiplier ceiling; `None`: no ceiling.
    pub max_multiplier: Option<Multiplier>,
    /// The key's groups (`None`: any provider; empty: only providers without groups).
    pub groups: Option<Vec<String>>,
    /// The seed for any randomness in the plan.
    pub seed: u64,
}

/// One upstream try of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The provider to use.
    pub provider_id: String,
    /// The provider's channel to use.
    pub channel_id: String,
    /// The model name to send upstream.
    pub upstream_model: String,
    /// The multiplier it is served at.
    pub multiplier: Multiplier,
}

/// Why a router made no plan (the WIT `route-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// No provider lists the model for this endpoint.
    #[error("unknown model: {0}")]
    UnknownModel(String),
    /// The key's groups or multiplier ceiling exclude every provider of the model.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// No usable channel right now.
    #[error("no available channel: {0}")]
    NoAvailableChannel(String),
    /// Anything else.
    #[error("routing failed: {0}")]
    Failed(String),
}

/// Whether a provider with `provider_groups` is open to a key with `key_groups`
/// (`None`: any provider; empty: only providers without groups; else: intersecting ones).
pub fn groups_permit(key_groups: Option<&[String]>, provider_groups: &[String]) -> bool {
    match key_groups {
        None => true,
        Some([]) => provider_groups.is_empty(),
        Some(key_groups) => provider_groups
            .iter()
            .any(|group| key_groups.contains(group)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_rules_follow_the_key() {
        let groups = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(groups_permit(None, &groups(&["a"])));
        assert!(groups_permit(Some(&[]), &[]));
        assert!(!groups_permit(Some(&[]), &groups(&["a"])));
        assert!(groups_permit(Some(&groups(&["b", "a"])), &groups(&["a"])));
        assert!(!groups_permit(Some(&groups(&["b"])), &groups(&["a"])));
        assert!(!groups_permit(Some(&groups(&["b"])), &[]));
    }

    #[test]
    fn endpoints_reach_only_providers_of_their_wire_format() {
        assert!(EndpointKind::Messages.accepts(ProviderType::Messages));
        assert!(!EndpointKind::Messages.accepts(ProviderType::ChatCompletion));
        assert!(EndpointKind::ChatCompletions.accepts(ProviderType::Grok));
        assert!(!EndpointKind::ChatCompletions.accepts(ProviderType::Messages));
        assert!(!EndpointKind::Responses.accepts(ProviderType::ChatCompletion));
        assert!(EndpointKind::Embeddings.accepts(ProviderType::Responses));
    }
}
