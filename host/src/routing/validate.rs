//! Plan validation (DESIGN §4): every attempt a router proposes is checked against the host's
//! own view of the routing tables before anything is sent. A router can reorder and choose;
//! it can never widen access.

use super::snapshot::{ModelEntry, Provider};
use super::{Attempt, RouteRequest, RoutingSnapshot, groups_permit};

/// Why a plan was refused: the first illegal attempt and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanViolation {
    /// The attempt names a provider that does not exist.
    #[error("attempt {index}: unknown provider `{provider_id}`")]
    UnknownProvider { index: usize, provider_id: String },
    /// The provider is disabled.
    #[error("attempt {index}: provider `{provider_id}` is disabled")]
    ProviderDisabled { index: usize, provider_id: String },
    /// The provider's wire format does not fit the endpoint.
    #[error("attempt {index}: provider `{provider_id}` does not speak this endpoint's format")]
    WrongWireFormat { index: usize, provider_id: String },
    /// The provider does not list the requested model.
    #[error("attempt {index}: provider `{provider_id}` does not serve the requested model")]
    ModelNotServed { index: usize, provider_id: String },
    /// The key's groups exclude the provider.
    #[error("attempt {index}: provider `{provider_id}` is outside the key's groups")]
    OutsideGroups { index: usize, provider_id: String },
    /// The channel is not one of the provider's.
    #[error("attempt {index}: channel `{channel_id}` is not a channel of `{provider_id}`")]
    UnknownChannel {
        index: usize,
        provider_id: String,
        channel_id: String,
    },
    /// The channel is disabled or has weight 0.
    #[error("attempt {index}: channel `{channel_id}` is disabled or has weight 0")]
    ChannelUnusable { index: usize, channel_id: String },
    /// The multiplier differs from the provider's for the model.
    #[error("attempt {index}: multiplier {claimed} is not the provider's {actual}")]
    WrongMultiplier {
        index: usize,
        claimed: String,
        actual: String,
    },
    /// The multiplier exceeds the request's ceiling.
    #[error("attempt {index}: multiplier {multiplier} exceeds the ceiling {ceiling}")]
    AboveCeiling {
        index: usize,
        multiplier: String,
        ceiling: String,
    },
    /// The upstream model is not the provider's name for the model.
    #[error("attempt {index}: upstream model `{claimed}` is not the provider's `{actual}`")]
    WrongUpstreamModel {
        index: usize,
        claimed: String,
        actual: String,
    },
}

/// Checks every attempt of `attempts` for `request` against `snapshot`.
pub fn validate_plan(
    snapshot: &RoutingSnapshot,
    request: &RouteRequest,
    attempts: &[Attempt],
) -> Result<(), PlanViolation> {
    // Consecutive attempts mostly share a provider: its checks hold for all of them.
    let mut previous: Option<(&Provider, &ModelEntry)> = None;
    for (index, attempt) in attempts.iter().enumerate() {
        let (provider, entry) = match previous {
            Some((provider, entry)) if provider.id == attempt.provider_id => (provider, entry),
            _ => validate_provider(snapshot, request, index, attempt)?,
        };
        previous = Some((provider, entry));
        validate_channel(request, index, attempt, provider, entry)?;
    }
    Ok(())
}

/// The attempt's provider and its entry for the model, if the request may use them.
fn validate_provider<'s>(
    snapshot: &'s RoutingSnapshot,
    request: &RouteRequest,
    index: usize,
    attempt: &Attempt,
) -> Result<(&'s Provider, &'s ModelEntry), PlanViolation> {
    let provider_id = || attempt.provider_id.clone();
    let provider =
        snapshot
            .provider(&attempt.provider_id)
            .ok_or_else(|| PlanViolation::UnknownProvider {
                index,
                provider_id: provider_id(),
            })?;
    if !provider.enabled {
        return Err(PlanViolation::ProviderDisabled {
            index,
            provider_id: provider_id(),
        });
    }
    if !request.endpoint.accepts(provider.provider_type) {
        return Err(PlanViolation::WrongWireFormat {
            index,
            provider_id: provider_id(),
        });
    }
    let entry = provider
        .entry(&request.model)
        .ok_or_else(|| PlanViolation::ModelNotServed {
            index,
            provider_id: provider_id(),
        })?;
    if !groups_permit(request.groups.as_deref(), &provider.groups) {
        return Err(PlanViolation::OutsideGroups {
            index,
            provider_id: provider_id(),
        });
    }
    Ok((provider, entry))
}

/// Whether the attempt's channel, multiplier and upstream model are its provider's.
fn validate_channel(
    request: &RouteRequest,
    index: usize,
    attempt: &Attempt,
    provider: &Provider,
    entry: &ModelEntry,
) -> Result<(), PlanViolation> {
    let provider_id = || attempt.provider_id.clone();
    let channel =
        provider
            .channel(&attempt.channel_id)
            .ok_or_else(|| PlanViolation::UnknownChannel {
                index,
                provider_id: provider_id(),
                channel_id: attempt.channel_id.clone(),
            })?;
    if !channel.enabled || channel.weight == 0 {
        return Err(PlanViolation::ChannelUnusable {
            index,
            channel_id: channel.id.clone(),
        });
    }
    if attempt.multiplier != entry.multiplier {
        return Err(PlanViolation::WrongMultiplier {
            index,
            claimed: attempt.multiplier.to_string(),
            actual: entry.multiplier.to_string(),
        });
    }
    if let Some(ceiling) = request
        .max_multiplier
        .filter(|ceiling| entry.multiplier > *ceiling)
    {
        return Err(PlanViolation::AboveCeiling {
            index,
            multiplier: entry.multiplier.to_string(),
            ceiling: ceiling.to_string(),
        });
    }
    if attempt.upstream_model != entry.upstream_model() {
        return Err(PlanViolation::WrongUpstreamModel {
            index,
            claimed: attempt.upstream_model.clone(),
            actual: entry.upstream_model().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::routing::ProviderType;
    use crate::routing::EndpointKind;
    use crate::routing::snapshot::{Channel, ChannelKey, ModelEntry, Provider};

    fn provider(id: &str, groups: &[&str]) -> Provider {
        let channel = |id: &str, weight, enabled| Channel {
            id: id.to_owned(),
            name: id.to_owned(),
            base_url: "http://127.0.0.1:9".to_owned(),
            api_key: ChannelKey::new("sk-secret".to_owned()),
            weight,
            enabled,
        };
        Provider {
            id: id.to_owned(),
            name: id.to_owned(),
            provider_type: ProviderType::ChatCompletion,
            enabled: true,
            priority: 0,
            max_retries: -1,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            models: vec![ModelEntry {
                model: "m".to_owned(),
                redirect: Some("m-upstream".to_owned()),
                multiplier: "1.5".parse().unwrap(),
            }],
            channels: vec![
                channel(&format!("{id}-on"), 1, true),
                channel(&format!("{id}-off"), 1, false),
                channel(&format!("{id}-zero"), 0, true),
            ],
        }
    }

    fn store() -> RoutingSnapshot {
        let mut disabled = provider("disabled", &[]);
        disabled.enabled = false;
        let mut anthropic = provider("anthropic", &[]);
        anthropic.provider_type = ProviderType::Messages;
        RoutingSnapshot::new(vec![
            provider("open", &[]),
            provider("team", &["a"]),
            disabled,
            anthropic,
        ])
    }

    fn request() -> RouteRequest {
        RouteRequest {
            request_id: "r".to_owned(),
            model: "m".to_owned(),
            endpoint: EndpointKind::ChatCompletions,
            max_multiplier: None,
            groups: None,
            seed: 0,
        }
    }

    fn attempt(provider: &str, channel: &str) -> Attempt {
        Attempt {
            provider_id: provider.to_owned(),
            channel_id: channel.to_owned(),
            upstream_model: "m-upstream".to_owned(),
            multiplier: "1.5".parse().unwrap(),
        }
    }

    fn check(request: &RouteRequest, attempts: &[Attempt]) -> Result<(), PlanViolation> {
        validate_plan(&store(), request, attempts)
    }

    #[test]
    fn legal_attempts_pass() {
        let plan = [attempt("open", "open-on"), attempt("team", "team-on")];
        assert_eq!(check(&request(), &plan), Ok(()));
        assert_eq!(check(&request(), &[]), Ok(()));
    }

    #[test]
    fn unknown_or_disabled_providers_are_refused() {
        let unknown = check(&request(), &[attempt("nope", "open-on")]);
        assert!(matches!(
            unknown,
            Err(PlanViolation::UnknownProvider { index: 0, .. })
        ));
        let disabled = check(&request(), &[attempt("disabled", "disabled-on")]);
        assert!(matches!(
            disabled,
            Err(PlanViolation::ProviderDisabled { .. })
        ));
    }

    #[test]
    fn another_wire_format_is_refused() {
        let refused = check(&request(), &[attempt("anthropic", "anthropic-on")]);
        assert!(matches!(
            refused,
            Err(PlanViolation::WrongWireFormat { .. })
        ));
    }

    #[test]
    fn a_model_the_provider_does_not_serve_is_refused() {
        let mut other = request();
        other.model = "other".to_owned();
        let refused = check(&other, &[attempt("open", "open-on")]);
        assert!(matches!(refused, Err(PlanViolation::ModelNotServed { .. })));
    }

    #[test]
    fn unusable_or_foreign_channels_are_refused() {
        for channel in ["open-off", "open-zero"] {
            let refused = check(&request(), &[attempt("open", channel)]);
            assert!(
                matches!(refused, Err(PlanViolation::ChannelUnusable { .. })),
                "{channel}"
            );
        }
        let foreign = check(&request(), &[attempt("open", "team-on")]);
        assert!(matches!(foreign, Err(PlanViolation::UnknownChannel { .. })));
    }

    #[test]
    fn groups_are_enforced() {
        let mut keyed = request();
        keyed.groups = Some(Vec::new());
        let refused = check(
            &keyed,
            &[attempt("open", "open-on"), attempt("team", "team-on")],
        );
        assert!(matches!(
            refused,
            Err(PlanViolation::OutsideGroups { index: 1, .. })
        ));
    }

    #[test]
    fn multipliers_must_match_and_respect_the_ceiling() {
        let mut cheaper = attempt("open", "open-on");
        cheaper.multiplier = "0.1".parse().unwrap();
        let lied = check(&request(), &[cheaper]);
        assert!(matches!(lied, Err(PlanViolation::WrongMultiplier { .. })));
        let mut capped = request();
        capped.max_multiplier = Some("1.25".parse().unwrap());
        let refused = check(&capped, &[attempt("open", "open-on")]);
        assert!(matches!(refused, Err(PlanViolation::AboveCeiling { .. })));
    }

    #[test]
    fn the_upstream_model_must_be_the_providers() {
        let mut renamed = attempt("open", "open-on");
        renamed.upstream_model = "gpt-5-pro".to_owned();
        let refused = check(&request(), &[renamed]);
        assert!(matches!(
            refused,
            Err(PlanViolation::WrongUpstreamModel { .. })
        ));
    }
}
