//! Group-pinned: a Monoize router that sends a grouped key to the providers reserved for its
//! groups before the providers it shares with other groups.
//!
//! A key's groups are an access boundary the host enforces: a key with groups may use only the
//! providers sharing one of them (never an ungrouped provider), a key with an empty list only the
//! ungrouped providers, a key without groups any provider. Within that boundary this router
//! orders the providers of a grouped key by
//!
//! 1. the key's group they serve: providers of the key's first group before those of its second,
//!    and so on;
//! 2. then dedicated before shared: a provider all of whose groups are the key's (capacity
//!    reserved for these keys) before a provider that also serves other groups;
//! 3. then the store's priority order.
//!
//! The default waterfall (`monoize-waterfall`) plans over that order: the multiplier ceiling,
//! disabled providers and channels, weighted channel order from the request's seed, the retry
//! budget, the request's `max_attempts`, and health — an unhealthy channel is skipped, so when
//! a dedicated provider's channels are cooling down the shared providers take the traffic, and
//! when everything is unhealthy all of it is tried anyway, least recently failed first. Keys
//! without groups, or with an empty list, get the plain waterfall.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

struct GroupPinned;

impl Router for GroupPinned {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let Some(key_groups) = request
            .groups
            .as_deref()
            .filter(|groups| !groups.is_empty())
        else {
            // Nothing to pin: the plain waterfall, which reads only the pages it needs.
            return monoize_waterfall::sdk::route(&request);
        };
        // A dedicated provider may come last in priority order: every candidate is needed.
        let mut candidates = routing_store::all_candidates(&request)
            .map_err(|reason| monoize_waterfall::sdk::refusal(reason, &request))?;
        // Stable: within a tier the store's priority order (ties by id) stays.
        candidates.sort_by_key(|candidate| tier(key_groups, &candidate.groups));
        // The waterfall walks the candidates in this order.
        monoize_waterfall::sdk::route_over(&request, &candidates)
    }
}

monoize_plugin::register_router!(GroupPinned);

/// Where a provider of `provider_groups` goes for a key of `key_groups` (non-empty), lowest
/// first: the position of the first of the key's groups it serves, then `false` (dedicated)
/// before `true` (shared with groups the key does not have). A provider outside the key's
/// groups sorts last; the waterfall never plans it.
fn tier(key_groups: &[String], provider_groups: &[String]) -> (usize, bool) {
    let position = key_groups
        .iter()
        .position(|group| provider_groups.contains(group))
        .unwrap_or(usize::MAX);
    let shared = provider_groups
        .iter()
        .any(|group| !key_groups.contains(group));
    (position, shared)
}

#[cfg(test)]
mod tests {
    use super::tier;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn tiers_follow_the_key_groups_then_dedication() {
        let key = groups(&["team", "public"]);
        let mut providers = [
            ("outside", groups(&["other"])),
            ("public", groups(&["public"])),
            ("team-shared", groups(&["team", "other"])),
            ("ungrouped", groups(&[])),
            ("team-dedicated", groups(&["team"])),
            ("both", groups(&["public", "team"])),
        ];
        providers.sort_by_key(|(_, provider_groups)| tier(&key, provider_groups));
        let order: Vec<&str> = providers.iter().map(|(name, _)| *name).collect();
        // `both` serves only the key's groups, so it is dedicated too (after `team-dedicated` by
        // store order). The last two are outside the key's groups: the waterfall never plans them.
        assert_eq!(
            order,
            [
                "team-dedicated",
                "both",
                "team-shared",
                "public",
                "ungrouped",
                "outside"
            ]
        );
    }
}
