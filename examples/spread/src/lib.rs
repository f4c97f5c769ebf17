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
//! The host answers the candidates already filtered by 1 and 2, each usable channel with its
//! health; a spread needs all of them, so it reads every page (`routing_store::all_candidates`).
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
    Attempt, Candidate, CandidateChannel, NoCandidate, Plan, RouteError, RouteRequest, Router,
    routing_store,
};

/// How much of a model name goes into a message: a 64 KiB name must not become a 64 KiB line.
const MODEL_EXCERPT_CHARS: usize = 80;

struct Spread;

impl Router for Spread {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        // A spread weighs every usable channel against every other: it needs all candidates.
        match routing_store::all_candidates(&request) {
            Ok(candidates) => plan(&request, &candidates),
            Err(reason) => Err(refusal(&request, reason)),
        }
    }
}

monoize_plugin::register_router!(Spread);

/// The route error for the host's reason that no candidate passes `request`.
fn refusal(request: &RouteRequest, reason: NoCandidate) -> RouteError {
    let model = excerpt(&request.model);
    match reason {
        NoCandidate::UnknownModel => {
            RouteError::UnknownModel(format!("no provider serves model {model} on this endpoint"))
        }
        NoCandidate::NotPermitted => RouteError::NotPermitted(format!(
            "the key's groups or multiplier ceiling exclude every provider of model {model}"
        )),
        NoCandidate::NoUsableChannel => RouteError::NoAvailableChannel(format!(
            "no permitted provider of model {model} is enabled with an enabled channel of \
             weight > 0"
        )),
    }
}

/// Plans `request` over `candidates` (as `routing_store::all_candidates` answers them, each
/// channel with its health). Separate from [`Router::route`] so that it runs natively in unit
/// tests.
fn plan(request: &RouteRequest, candidates: &[Candidate]) -> Result<Plan, RouteError> {
    if candidates.is_empty() {
        return Err(refusal(request, NoCandidate::UnknownModel));
    }
    // The host answers only what the request may use; checked again, since the host would
    // refuse the whole plan for one attempt outside the ceiling or the groups.
    let permitted: Vec<&Candidate> = candidates
        .iter()
        .filter(|candidate| permits(request, candidate))
        .collect();
    if permitted.is_empty() {
        return Err(refusal(request, NoCandidate::NotPermitted));
    }

    // The pool, each channel with its sort key, in provider then channel order.
    let mut rng = Rng::with_seed(request.seed);
    let mut pool: Vec<Slot<'_>> = Vec::new();
    for (provider, candidate) in permitted.iter().enumerate() {
        for channel in candidate.channels.iter().filter(|c| c.weight > 0) {
            pool.push(Slot {
                provider,
                channel,
                key: weighted_key(&mut rng, channel.weight),
            });
        }
    }
    if pool.is_empty() {
        return Err(refusal(request, NoCandidate::NoUsableChannel));
    }

    // Healthy first, by key; then unhealthy, least recently failed first, then by key. The
    // sort is stable, so equal keys keep provider and channel order.
    pool.sort_by(|a, b| {
        b.channel
            .healthy
            .cmp(&a.channel.healthy)
            .then_with(|| {
                if a.channel.healthy {
                    Ordering::Equal
                } else {
                    a.channel.last_failure.cmp(&b.channel.last_failure)
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
            upstream_model: match &candidate.redirect {
                Some(redirect) if !redirect.is_empty() => redirect.clone(),
                _ => request.model.clone(),
            },
            multiplier: candidate.multiplier,
        });
    }
    Ok(Plan { attempts })
}

/// One usable channel in the pool.
struct Slot<'a> {
    /// Index of its provider in the permitted list.
    provider: usize,
    /// The channel, with its health.
    channel: &'a CandidateChannel,
    /// `ln(u) / weight`: higher comes first.
    key: f64,
}

/// Whether the key's multiplier ceiling and groups allow `candidate` — the host's rule, which
/// refuses a whole plan when one attempt breaks it.
fn permits(request: &RouteRequest, candidate: &Candidate) -> bool {
    if request
        .max_multiplier
        .is_some_and(|ceiling| candidate.multiplier > ceiling)
    {
        return false;
    }
    match request.groups.as_deref() {
        None => true,
        Some([]) => candidate.groups.is_empty(),
        Some(groups) => candidate.groups.iter().any(|group| groups.contains(group)),
    }
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
    use monoize_plugin::router::{DECIMAL_ONE, EndpointKind};

    use super::*;

    fn channel(id: &str, weight: u32) -> CandidateChannel {
        CandidateChannel {
            id: id.to_owned(),
            weight,
            healthy: true,
            last_failure: None,
        }
    }

    fn provider(id: &str, channels: Vec<CandidateChannel>) -> Candidate {
        Candidate {
            provider_id: id.to_owned(),
            priority: 0,
            max_retries: -1,
            groups: Vec::new(),
            redirect: None,
            multiplier: DECIMAL_ONE,
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
            provider("a", vec![channel("light", 1)]),
            provider("b", vec![channel("heavy", 3)]),
        ];
        let heavy_first = (0..4_000)
            .filter(|seed| {
                let plan = plan(&request(*seed), &candidates).unwrap();
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
                (0..6).map(|i| channel(&format!("a{i}"), i + 1)).collect(),
            ),
            provider(
                "b",
                (0..6).map(|i| channel(&format!("b{i}"), i + 1)).collect(),
            ),
        ];
        for seed in 0..50 {
            // The SDK's records have no `PartialEq`: compare their debug forms.
            let first = format!("{:?}", plan(&request(seed), &candidates));
            let again = format!("{:?}", plan(&request(seed), &candidates));
            assert_eq!(first, again, "seed {seed}");
        }
    }

    #[test]
    fn zero_weight_channels_are_never_planned() {
        let candidates = [provider("p", vec![channel("zero", 0), channel("ok", 1)])];
        let plan = plan(&request(1), &candidates).unwrap();
        assert_eq!(channels_of(&plan), ["ok"]);
    }

    #[test]
    fn unhealthy_channels_go_last_least_recently_failed_first() {
        let failed = |id: &str, at: i64| CandidateChannel {
            healthy: false,
            last_failure: Some(at),
            ..channel(id, 100)
        };
        let candidates = [provider(
            "p",
            vec![
                failed("late", 200),
                failed("early", 100),
                channel("well", 1),
            ],
        )];
        let plan = plan(&request(3), &candidates).unwrap();
        assert_eq!(channels_of(&plan), ["well", "early", "late"]);
    }

    #[test]
    fn ceiling_groups_budget_and_redirect() {
        let mut dear = provider("dear", vec![channel("d1", 1)]);
        dear.multiplier = 2 * DECIMAL_ONE;
        let mut grouped = provider("grouped", vec![channel("g1", 1)]);
        grouped.groups = vec!["a".to_owned()];
        let mut thrifty = provider(
            "thrifty",
            vec![channel("t1", 1), channel("t2", 1), channel("t3", 1)],
        );
        thrifty.max_retries = 1;
        thrifty.redirect = Some("vendor-m".to_owned());
        let candidates = [dear, grouped, thrifty];

        let mut req = request(5);
        req.max_multiplier = Some(DECIMAL_ONE);
        req.groups = Some(Vec::new());
        let plan = plan(&req, &candidates).unwrap();
        assert_eq!(plan.attempts.len(), 2, "thrifty's budget is two attempts");
        assert!(plan.attempts.iter().all(|a| a.provider_id == "thrifty"));
        assert!(plan.attempts.iter().all(|a| a.upstream_model == "vendor-m"));
    }

    #[test]
    fn route_errors() {
        assert!(matches!(
            plan(&request(0), &[]),
            Err(RouteError::UnknownModel(_))
        ));
        let mut req = request(0);
        req.groups = Some(vec!["zzz".to_owned()]);
        let candidates = [provider("p", vec![channel("c", 1)])];
        assert!(matches!(
            plan(&req, &candidates),
            Err(RouteError::NotPermitted(_))
        ));
        let candidates = [provider("p", vec![channel("c", 0)])];
        assert!(matches!(
            plan(&request(0), &candidates),
            Err(RouteError::NoAvailableChannel(_))
        ));
    }

    #[test]
    fn the_plan_is_capped_at_the_requests_max_attempts() {
        let candidates: Vec<Candidate> = (0..100)
            .map(|p| provider(&format!("p{p}"), vec![channel(&format!("c{p}"), 1)]))
            .collect();
        let uncapped = {
            let mut req = request(9);
            req.max_attempts = u32::MAX;
            plan(&req, &candidates).unwrap()
        };
        assert_eq!(uncapped.attempts.len(), 100);
        for max_attempts in [0, 1, 2, 5, 32, 99, 100, 101] {
            let mut req = request(9);
            req.max_attempts = max_attempts;
            let capped = plan(&req, &candidates).unwrap();
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
