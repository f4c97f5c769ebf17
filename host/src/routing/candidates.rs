//! Candidate queries: the providers a request may use, read page by page from the snapshot.
//! The filters are the rules [`validate_plan`](super::validate_plan) enforces, so the host
//! never hands a router a provider it would refuse an attempt on, and a router that plans a few
//! attempts reads only the first providers. Nothing is ranked: the order is the snapshot's
//! (`priority`, ties by id); the router decides.

use crate::money::Multiplier;

use super::snapshot::{Listed, RoutingSnapshot};
use super::{EndpointKind, groups_permit};

/// What a router looks for: the parts of a route request the host filters by.
#[derive(Debug, Clone, Copy)]
pub struct CandidateQuery<'q> {
    /// The logical model.
    pub model: &'q str,
    /// Only providers of a wire format it accepts.
    pub endpoint: EndpointKind,
    /// Only providers whose multiplier for the model is at most this; `None`: no ceiling.
    pub max_multiplier: Option<Multiplier>,
    /// Only providers these groups permit (see [`groups_permit`]).
    pub groups: Option<&'q [String]>,
}

/// Why no provider passes a query, decided in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCandidate {
    /// No provider lists the model for a wire format the endpoint accepts.
    UnknownModel,
    /// Providers list it, but the ceiling or the groups exclude all of them.
    NotPermitted,
    /// Permitted providers exist, but none is enabled with a usable channel.
    NoUsableChannel,
}

/// One page of candidates.
#[derive(Debug, Clone)]
pub struct CandidatePage<'s> {
    /// The candidates, in snapshot order.
    pub candidates: Vec<Listed<'s>>,
    /// Where the next page starts; `None` when no candidate is left.
    pub next: Option<usize>,
}

/// How far a listing gets through a query's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Its wire format does not fit the endpoint.
    OtherWireFormat,
    /// The ceiling or the groups exclude it.
    Excluded,
    /// Disabled, or no enabled channel of weight > 0.
    Unusable,
    /// A candidate.
    Candidate,
}

impl CandidateQuery<'_> {
    fn stage(&self, listed: &Listed<'_>) -> Stage {
        let provider = listed.provider;
        if !self.endpoint.accepts(provider.provider_type) {
            return Stage::OtherWireFormat;
        }
        let above_ceiling = self
            .max_multiplier
            .is_some_and(|ceiling| listed.entry.multiplier > ceiling);
        if above_ceiling || !groups_permit(self.groups, &provider.groups) {
            return Stage::Excluded;
        }
        if !provider.enabled || !provider.channels.iter().any(|channel| channel.usable()) {
            return Stage::Unusable;
        }
        Stage::Candidate
    }
}

/// The candidates of `query` in `snapshot` from position `cursor` (0 first, then a page's
/// `next`), at most `limit` of them (0 reads as 1). An error when nothing at all passes, and
/// only for the first page.
pub fn candidate_page<'s>(
    snapshot: &'s RoutingSnapshot,
    query: &CandidateQuery<'_>,
    cursor: usize,
    limit: usize,
) -> Result<CandidatePage<'s>, NoCandidate> {
    let limit = limit.max(1);
    let listings = snapshot.listings(query.model);
    let mut candidates = Vec::new();
    let mut furthest = Stage::OtherWireFormat;
    let mut next = None;
    for (position, listed) in listings.enumerate().skip(cursor) {
        let stage = query.stage(&listed);
        if stage != Stage::Candidate {
            furthest = furthest.max(stage);
            continue;
        }
        if candidates.len() == limit {
            next = Some(position);
            break;
        }
        candidates.push(listed);
    }
    if candidates.is_empty() && cursor == 0 {
        return Err(match furthest {
            Stage::OtherWireFormat => NoCandidate::UnknownModel,
            Stage::Excluded => NoCandidate::NotPermitted,
            Stage::Unusable | Stage::Candidate => NoCandidate::NoUsableChannel,
        });
    }
    Ok(CandidatePage { candidates, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::routing::ProviderType;
    use crate::routing::snapshot::{Channel, ChannelKey, ModelEntry, Provider};

    fn provider(id: &str, priority: i64, multiplier: &str) -> Provider {
        Provider {
            id: id.to_owned(),
            name: id.to_owned(),
            provider_type: ProviderType::ChatCompletion,
            enabled: true,
            priority,
            max_retries: -1,
            groups: Vec::new(),
            models: vec![ModelEntry {
                model: "m".to_owned(),
                redirect: None,
                multiplier: multiplier.parse().unwrap(),
            }],
            channels: vec![Channel {
                id: format!("{id}-1"),
                name: format!("{id}-1"),
                base_url: "http://127.0.0.1:9".to_owned(),
                api_key: ChannelKey::new("sk".to_owned()),
                weight: 1,
                enabled: true,
            }],
        }
    }

    fn query(model: &str) -> CandidateQuery<'_> {
        CandidateQuery {
            model,
            endpoint: EndpointKind::ChatCompletions,
            max_multiplier: None,
            groups: None,
        }
    }

    fn ids(page: &CandidatePage<'_>) -> Vec<String> {
        page.candidates
            .iter()
            .map(|listed| listed.provider.id.clone())
            .collect()
    }

    #[test]
    fn pages_follow_priority_and_skip_what_no_plan_may_use() {
        let mut off = provider("off", 1, "1");
        off.enabled = false;
        let mut dead = provider("dead", 2, "1");
        dead.channels[0].weight = 0;
        let mut anthropic = provider("anthropic", 3, "1");
        anthropic.provider_type = ProviderType::Messages;
        let mut team = provider("team", 4, "1");
        team.groups = vec!["a".to_owned()];
        let snapshot = RoutingSnapshot::new(vec![
            provider("e", 6, "1"),
            provider("a", 0, "1"),
            off,
            dead,
            anthropic,
            team,
            provider("dear", 5, "3"),
        ]);
        let first = candidate_page(&snapshot, &query("m"), 0, 2).unwrap();
        assert_eq!(ids(&first), ["a", "team"]);
        let second = candidate_page(&snapshot, &query("m"), first.next.unwrap(), 2).unwrap();
        assert_eq!(ids(&second), ["dear", "e"]);
        assert_eq!(second.next, None);

        let mut capped = query("m");
        capped.max_multiplier = Some(Multiplier::ONE);
        let no_groups: Vec<String> = Vec::new();
        capped.groups = Some(&no_groups);
        let page = candidate_page(&snapshot, &capped, 0, 0).unwrap();
        assert_eq!(ids(&page), ["a"], "limit 0 reads as 1");
        let rest = candidate_page(&snapshot, &capped, page.next.unwrap(), 10).unwrap();
        assert_eq!(ids(&rest), ["e"]);
        assert!(
            candidate_page(&snapshot, &capped, 100, 10)
                .unwrap()
                .candidates
                .is_empty()
        );
    }

    #[test]
    fn an_empty_first_page_says_why() {
        let mut off = provider("off", 0, "1");
        off.enabled = false;
        let snapshot = RoutingSnapshot::new(vec![provider("dear", 0, "2"), off]);
        assert_eq!(
            candidate_page(&snapshot, &query("other"), 0, 8).err(),
            Some(NoCandidate::UnknownModel)
        );
        let mut messages = query("m");
        messages.endpoint = EndpointKind::Messages;
        assert_eq!(
            candidate_page(&snapshot, &messages, 0, 8).err(),
            Some(NoCandidate::UnknownModel)
        );
        let mut capped = query("m");
        capped.max_multiplier = Some("0.5".parse().unwrap());
        assert_eq!(
            candidate_page(&snapshot, &capped, 0, 8).err(),
            Some(NoCandidate::NotPermitted)
        );
        capped.max_multiplier = Some(Multiplier::ONE);
        assert_eq!(
            candidate_page(&snapshot, &capped, 0, 8).err(),
            Some(NoCandidate::NoUsableChannel)
        );
    }
}
