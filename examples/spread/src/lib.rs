//! Spread: a Monoize router that spreads requests over every usable channel of every eligible
//! provider, by weight, instead of filling the first provider before touching the next.
//!
//! 1. The eligible providers: enabled, within the key's multiplier ceiling, within its groups.
//! 2. The pool: every usable channel (enabled, weight > 0) of every eligible provider.
//! 3. The pool in a weighted random order drawn from the request's seed: a channel's chance to
//!    come first is its weight's share of the whole pool's weight, whatever its provider.
//!    Priorities do not matter; weights are compared across providers.
//! 4. Healthy channels first, in that order; the unhealthy ones after them, least recently failed
//!    first (a channel that never failed first of all), ties in the weighted order. So a request
//!    is still tried somewhere when every channel is cooling down.
//! 5. Each provider gets at most `max_retries + 1` attempts (all when negative), and the plan at
//!    most the request's `max_attempts` (the most the host will try: it cuts a longer plan).
//!
//! Route errors: `unknown-model` when no provider lists the model on this endpoint,
//! `not-permitted` when the ceiling or the groups exclude all that do, `no-available-channel`
//! when none of the rest is enabled with a usable channel. Same request, seed and store: same
//! plan.
//!
//! The weighted order is Efraimidis–Spirakis sampling: each channel draws `u` uniform in (0, 1]
//! and gets the key `ln(u) / weight`; sorting by key, highest first, is a weighted draw without
//! replacement, in O(n log n) for the whole pool.

use std::cmp::Ordering;

use fastrand::Rng;
use monoize_plugin::router::{
    Attempt, Candidate, Channel, ChannelHealth, Plan, RouteError, RouteRequest, Router, health,
    routing_store,
};

/// How much of a model name goes into a message: a 64 KiB name must not become a 64 KiB line.
const MODEL_EXCERPT_CHARS: usize = 80;

struct Spread;

impl Router for Spread {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let candidates = routing_store::candidates(&request.model, request.endpoint);
        plan(&request, &candidates, |ids| {
            health::channels(&request.model, ids)
        })
    }
}

monoize_plugin::register_router!(Spread);

/// Plans `request` over `candidates` (as `routing_store::candidates` answers them), asking
/// `health` once for the health of the channel ids it is given, one answer per id in order.
/// Separate from [`Router::route`] so that it runs natively in unit tests.
fn plan(
    request: &RouteRequest,
    candidates: &[Candidate],
    health: impl FnOnce(&[&str]) -> Vec<ChannelHealth>,
) -> Result<Plan, RouteError> {
    if candidates.is_empty() {
        return Err(RouteError::UnknownModel(format!(
            "no provider serves model {} on this endpoint",
            excerpt(&request.model)
        )));
    }
    let permitted: Vec<&Candidate> = candidates
        .iter()
        .filter(|candidate| permits(request, candidate))
        .collect();
    if permitted.is_empty() {
        return Err(RouteError::NotPermitted(format!(
            "the key's groups or multiplier ceiling exclude every provider of model {}",
            excerpt(&request.model)
        )));
    }

    // The pool, each channel with its sort key, in provider then channel order.
    let mut rng = Rng::with_seed(request.seed);
    let mut pool: Vec<Slot<'_>> = Vec::new();
    for (provider, candidate) in permitted.iter().enumerate() {
        if !candidate.enabled {
            continue;
        }
        for channel in candidate.channels.iter().filter(|c| usable(c)) {
            pool.push(Slot {
                provider,
                channel,
                key: weighted_key(&mut rng, channel.weight),
                last_failure: None,
                healthy: true,
            });
        }
    }
    if pool.is_empty() {
        return Err(RouteError::NoAvailableChannel(format!(
            "no permitted provider of model {} is enabled with an enabled channel of weight > 0",
            excerpt(&request.model)
        )));
    }

    // Health, asked once for the whole pool; a missing answer reads as healthy.
    let ids: Vec<&str> = pool.iter().map(|slot| slot.channel.id.as_str()).collect();
    let answers = health(&ids);
    for (slot, answer) in pool.iter_mut().zip(answers) {
        slot.healthy = answer.healthy;
        slot.last_failure = answer.last_failure;
    }

    // Healthy first, by key; then unhealthy, least recently failed first, then by key. The
    // sort is stable, so equal keys keep provider and channel order.
    pool.sort_by(|a, b| {
        b.healthy
            .cmp(&a.healthy)
            .then_with(|| {
                if a.healthy {
                    Ordering::Equal
                } else {
                    a.last_failure.cmp(&b.last_failure)
                }
            })
            .then_with(|| b.key.total_cmp(&a.key))
    });

    // The host makes at most `max_attempts` attempts (always ≥ 1; 0 would read as 1): planning
    // more is wasted work. A short plan also keeps a store of thousands of channels cheap.
    let max_attempts = usize::try_from(request.max_attempts)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut left: Vec<usize> = permitted.iter().map(|c| budget(c.max_retries)).collect();
    let mut attempts = Vec::new();
    for slot in &pool {
        if attempts.len() >= max_attempts {
            break;
        }
        let Some(left) = left.get_mut(slot.provider).filter(|left| **left > 0) else {
            continue;
        };
        *left -= 1;
        let Some(candidate) = permitted.get(slot.provider) else {
            continue;
        };
        attempts.push(Attempt {
            provider_id: candidate.provider_id.clone(),
            channel_id: slot.channel.id.clone(),
            upstream_model: match &candidate.entry.redirect {
                Some(redirect) if !redirect.is_empty() => redirect.clone(),
                _ => request.model.clone(),
            },
            multiplier: candidate.entry.multiplier,
        });
    }
    Ok(Plan { attempts })
}

/// One usable channel in the pool.
struct Slot<'a> {
    /// Index of its provider in the permitted list.
    provider: usize,
    channel: &'a Channel,
    /// `ln(u) / weight`: higher comes first.
    key: f64,
    healthy: bool,
    last_failure: Option<i64>,
}

/// Whether the key's multiplier ceiling and groups allow `candidate` — the host's rule, which
/// refuses a whole plan when one attempt breaks it.
fn permits(request: &RouteRequest, candidate: &Candidate) -> bool {
    if request
        .max_multiplier
        .is_some_and(|ceiling| candidate.entry.multiplier > ceiling)
    {
        return false;
    }
    match request.groups.as_deref() {
        None => true,
        Some([]) => candidate.groups.is_empty(),
        Some(groups) => candidate.groups.iter().any(|group| groups.contains(group)),
    }
}

/// Whether a channel may be planned at all.
fn usable(channel: &Channel) -> bool {
    channel.enabled && channel.weight > 0
}

/// The Efraimidis–Spirakis key of a channel of `weight` (> 0): `ln(u) / weight` with `u` uniform
/// in (0, 1]. Always finite and ≤ 0.
fn weighted_key(rng: &mut Rng, weight: u32) -> f64 {
    let u = 1.0 - rng.f64();
    u.ln() / f64::from(weight.max(1))
}

/// How many attempts a provider may get: `max_retries + 1`, or all for a negative value.
fn budget(max_retries: i32) -> usize {
    usize::try_from(max_retries).map_or(usize::MAX, |retries| retries.saturating_add(1))
}

/// The model name quoted and escaped (control characters included), cut to a readable length.
fn excerpt(model: &str) -> String {
    match model.char_indices().nth(MODEL_EXCERPT_CHARS) {
        Some((end, _)) => format!(
            "{:?}… ({} bytes)",
            model.get(..end).unwrap_or_default(),
            model.len()
        ),
        None => format!("{model:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use monoize_plugin::router::{DECIMAL_ONE, EndpointKind, ModelEntry, ProviderType};

    use super::*;

    fn channel(id: &str, weight: u32, enabled: bool) -> Channel {
        Channel {
            id: id.to_owned(),
            name: id.to_owned(),
            weight,
            enabled,
        }
    }

    fn provider(id: &str, channels: Vec<Channel>) -> Candidate {
        Candidate {
            provider_id: id.to_owned(),
            provider_name: id.to_owned(),
            provider_type: ProviderType::ChatCompletion,
            enabled: true,
            priority: 0,
            max_retries: -1,
            groups: Vec::new(),
            entry: ModelEntry {
                model: "m".to_owned(),
                redirect: None,
                multiplier: DECIMAL_ONE,
            },
            channels,
        }
    }

    fn request(seed: u64) -> RouteRequest {
        RouteRequest {
            request_id: "test".to_owned(),
            model: "m".to_owned(),
            endpoint: EndpointKind::ChatCompletions,
            max_multiplier: None,
            groups: None,
            seed,
            max_attempts: 32,
        }
    }

    fn healthy(ids: &[&str]) -> Vec<ChannelHealth> {
        ids.iter()
            .map(|id| ChannelHealth {
                channel_id: (*id).to_owned(),
                healthy: true,
                consecutive_failures: 0,
                last_failure: None,
            })
            .collect()
    }

    fn channels_of(plan: &Plan) -> Vec<&str> {
        plan.attempts
            .iter()
            .map(|a| a.channel_id.as_str())
            .collect()
    }

    #[test]
    fn the_first_channel_follows_weights_across_providers() {
        // Priorities do not matter: `heavy` (weight 3, second provider) comes first in ~3/4.
        let candidates = [
            provider("a", vec![channel("light", 1, true)]),
            provider("b", vec![channel("heavy", 3, true)]),
        ];
        let heavy_first = (0..4_000)
            .filter(|seed| {
                let plan = plan(&request(*seed), &candidates, healthy).unwrap();
                assert_eq!(plan.attempts.len(), 2);
                plan.attempts[0].channel_id == "heavy"
            })
            .count();
        assert!((2_800..=3_200).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn same_seed_same_plan() {
        let candidates = [
            provider(
                "a",
                (0..6)
                    .map(|i| channel(&format!("a{i}"), i + 1, true))
                    .collect(),
            ),
            provider(
                "b",
                (0..6)
                    .map(|i| channel(&format!("b{i}"), i + 1, true))
                    .collect(),
            ),
        ];
        for seed in 0..50 {
            // The SDK's records have no `PartialEq`: compare their debug forms.
            let first = format!("{:?}", plan(&request(seed), &candidates, healthy));
            let again = format!("{:?}", plan(&request(seed), &candidates, healthy));
            assert_eq!(first, again, "seed {seed}");
        }
    }

    #[test]
    fn unusable_channels_and_disabled_providers_are_never_planned() {
        let mut off = provider("off", vec![channel("o1", 1, true)]);
        off.enabled = false;
        let candidates = [
            off,
            provider(
                "p",
                vec![
                    channel("zero", 0, true),
                    channel("disabled", 5, false),
                    channel("ok", 1, true),
                ],
            ),
        ];
        let plan = plan(&request(1), &candidates, healthy).unwrap();
        assert_eq!(channels_of(&plan), ["ok"]);
    }

    #[test]
    fn unhealthy_channels_go_last_least_recently_failed_first() {
        let candidates = [provider(
            "p",
            vec![
                channel("late", 100, true),
                channel("early", 100, true),
                channel("well", 1, true),
            ],
        )];
        let plan = plan(&request(3), &candidates, |ids| {
            let mut answers = healthy(ids);
            for answer in &mut answers {
                match answer.channel_id.as_str() {
                    "late" => (answer.healthy, answer.last_failure) = (false, Some(200)),
                    "early" => (answer.healthy, answer.last_failure) = (false, Some(100)),
                    _ => {}
                }
            }
            answers
        })
        .unwrap();
        assert_eq!(channels_of(&plan), ["well", "early", "late"]);
    }

    #[test]
    fn ceiling_groups_budget_and_redirect() {
        let mut dear = provider("dear", vec![channel("d1", 1, true)]);
        dear.entry.multiplier = 2 * DECIMAL_ONE;
        let mut grouped = provider("grouped", vec![channel("g1", 1, true)]);
        grouped.groups = vec!["a".to_owned()];
        let mut thrifty = provider(
            "thrifty",
            vec![
                channel("t1", 1, true),
                channel("t2", 1, true),
                channel("t3", 1, true),
            ],
        );
        thrifty.max_retries = 1;
        thrifty.entry.redirect = Some("vendor-m".to_owned());
        let candidates = [dear, grouped, thrifty];

        let mut req = request(5);
        req.max_multiplier = Some(DECIMAL_ONE);
        req.groups = Some(Vec::new());
        let plan = plan(&req, &candidates, healthy).unwrap();
        assert_eq!(plan.attempts.len(), 2, "thrifty's budget is two attempts");
        assert!(plan.attempts.iter().all(|a| a.provider_id == "thrifty"));
        assert!(plan.attempts.iter().all(|a| a.upstream_model == "vendor-m"));
    }

    #[test]
    fn route_errors() {
        assert!(matches!(
            plan(&request(0), &[], healthy),
            Err(RouteError::UnknownModel(_))
        ));
        let mut req = request(0);
        req.groups = Some(vec!["zzz".to_owned()]);
        let candidates = [provider("p", vec![channel("c", 1, true)])];
        assert!(matches!(
            plan(&req, &candidates, healthy),
            Err(RouteError::NotPermitted(_))
        ));
        let candidates = [provider("p", vec![channel("c", 0, true)])];
        assert!(matches!(
            plan(&request(0), &candidates, healthy),
            Err(RouteError::NoAvailableChannel(_))
        ));
    }

    #[test]
    fn the_plan_is_capped_at_the_requests_max_attempts() {
        let candidates: Vec<Candidate> = (0..100)
            .map(|p| provider(&format!("p{p}"), vec![channel(&format!("c{p}"), 1, true)]))
            .collect();
        let uncapped = {
            let mut req = request(9);
            req.max_attempts = u32::MAX;
            plan(&req, &candidates, healthy).unwrap()
        };
        assert_eq!(uncapped.attempts.len(), 100);
        for max_attempts in [0, 1, 2, 5, 32, 99, 100, 101] {
            let mut req = request(9);
            req.max_attempts = max_attempts;
            let capped = plan(&req, &candidates, healthy).unwrap();
            let len = (max_attempts as usize).clamp(1, 100);
            // The same order, cut: the first attempts of the uncapped plan.
            assert_eq!(
                channels_of(&capped),
                channels_of(&uncapped)[..len],
                "max_attempts {max_attempts}"
            );
        }
    }
}
