//! The Monoize waterfall: the default routing policy, as pure Rust over this crate's own plain
//! types, so the default router component, a native caller (the host's benchmarks) and custom
//! routers that build on it run the very same code.
//!
//! Without features the crate depends on `fastrand` alone. The feature `sdk` adds [`sdk`]: the
//! waterfall over `monoize-plugin`'s router types (candidates read from the host page by page,
//! plan or route error out), for routers that reorder or filter candidates and then let the
//! waterfall do the rest. It registers nothing: the default router (`monoize-routing`) and every
//! custom router register their own `route` export.
//!
//! Given the providers that list the requested model — already in priority order, as
//! `routing-store.candidates` answers them — [`plan`] walks them first to last:
//!
//! 1. A disabled provider is skipped.
//! 2. With a multiplier ceiling, a provider whose multiplier for the model is above it is
//!    skipped.
//! 3. Groups: a request without groups (`None`) may use any provider; with an empty list only
//!    providers without groups; otherwise only providers sharing at least one group with it.
//! 4. Its usable channels (enabled, weight > 0) are put in a weighted random order without
//!    replacement, drawn from a PRNG seeded with the request's seed and nothing else: the same
//!    request and seed give the same plan, and a channel's chance to come first is its share of
//!    the provider's weight.
//! 5. Unhealthy channels are dropped, and the first `max_retries + 1` of the rest become
//!    attempts (all of them when `max_retries` is negative), each sending the entry's redirect
//!    (when non-empty) or the requested model, at the entry's multiplier.
//! 6. The plan stops at the request's `max_attempts` (the most the host will try; it would cut a
//!    longer plan anyway). Nothing is reordered for it: a capped plan is exactly the first
//!    `max_attempts` attempts of the uncapped one.
//!
//! Each channel carries its health ([`Channel::health`]), as the host answers it with the
//! candidates. Because a provider's channels are ordered with draws that come after those of the
//! providers before it, the candidates after the point where the plan is full change nothing:
//! once the candidates read so far offer [`healthy_attempts`] summing to `max_attempts`, a
//! router need not read the rest ([`sdk::route`] stops there).
//!
//! **Panic fallback.** When that leaves no attempt only because every usable channel is
//! unhealthy, a blip must not become an outage (Envoy's panic threshold): the unhealthy channels
//! are planned instead, least recently failed first (a channel that never failed counts as
//! oldest), ties kept in provider order and then channel order, each provider still within its
//! retry budget, and cut at `max_attempts` like any plan. [`Plan::fallback`] says when this
//! happened.
//!
//! **Errors**, decided in this order:
//! - no candidate at all: [`Error::UnknownModel`];
//! - candidates, but the multiplier ceiling or the groups exclude every one of them (whether
//!   enabled or not): [`Error::NotPermitted`];
//! - permitted providers, but all disabled, or none with an enabled channel of weight > 0:
//!   [`Error::NoAvailableChannel`]. A disabled provider is capacity the operator switched off,
//!   not something the key lacks the right to, so the client is told nothing is available.
//!
//! Nothing here panics, whatever the input: an empty or enormous model name, odd characters,
//! weights summing past `u32::MAX`.

use core::fmt;

use fastrand::Rng;

#[cfg(feature = "sdk")]
pub mod sdk;

/// An exact non-negative decimal carried as the value × 10^9 (`1.25` is `1_250_000_000`), as in
/// WIT's `decimal`. Comparing two is comparing two integers.
pub type Decimal = u64;

/// An instant as milliseconds since the Unix epoch, as in WIT's `timestamp-ms`.
pub type TimestampMs = i64;

/// What to plan for: the parts of a route request the waterfall reads.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The logical model the client asked for, exactly as sent.
    pub model: &'a str,
    /// The highest multiplier the request may be served at; `None`: no ceiling.
    pub max_multiplier: Option<Decimal>,
    /// The key's groups. `None`: any provider. Empty: only providers without groups. Otherwise:
    /// only providers sharing at least one group with it.
    pub groups: Option<&'a [String]>,
    /// The only source of randomness.
    pub seed: u64,
    /// The most attempts to plan (the host's limit, WIT's `max-attempts`): the plan is the first
    /// this many of the attempts it would have without a limit. 0 reads as 1, so that a plan is
    /// never empty.
    pub max_attempts: usize,
}

/// A provider that lists the requested model, with its entry for it and its channels.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// The provider's id.
    pub provider_id: &'a str,
    /// A disabled provider is never planned.
    pub enabled: bool,
    /// How many times to retry on another of its channels; negative: as many as it has.
    pub max_retries: i32,
    /// Its groups; empty for a provider open to every key without groups.
    pub groups: &'a [String],
    /// The model name to send upstream instead of the requested one, when set and non-empty.
    pub redirect: Option<&'a str>,
    /// Its price multiplier for the model.
    pub multiplier: Decimal,
    /// Its channels in the store's order; unusable ones (disabled, weight 0) are skipped.
    pub channels: Vec<Channel<'a>>,
}

/// One channel of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel<'a> {
    /// The channel's id.
    pub id: &'a str,
    /// Its relative share of the provider's traffic; 0 takes none.
    pub weight: u32,
    /// A disabled channel is never planned.
    pub enabled: bool,
    /// Its health, as the host reports it.
    pub health: Health,
}

impl Channel<'_> {
    /// Whether the channel may be planned at all: enabled with a weight above zero.
    pub fn usable(&self) -> bool {
        self.enabled && self.weight > 0
    }
}

/// The health of one channel, as the host reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// False while the channel cools down after failures.
    pub healthy: bool,
    /// When it last failed; `None` if it never has.
    pub last_failure: Option<TimestampMs>,
}

impl Health {
    /// A channel the host has nothing against.
    pub const HEALTHY: Health = Health {
        healthy: true,
        last_failure: None,
    };
}

/// One upstream try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The provider's id.
    pub provider_id: &'a str,
    /// One of that provider's channels.
    pub channel_id: &'a str,
    /// The model name to send upstream: the entry's redirect, or the requested model.
    pub upstream_model: &'a str,
    /// The provider's multiplier for the model.
    pub multiplier: Decimal,
}

/// The attempts to make, first to last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Never empty.
    pub attempts: Vec<Attempt<'a>>,
    /// True when every usable channel was unhealthy and the plan is the panic fallback.
    pub fallback: bool,
}

/// Why no plan could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No provider lists the model for this endpoint.
    UnknownModel,
    /// Providers list the model, but the key's groups or multiplier ceiling exclude them all.
    NotPermitted,
    /// Permitted providers exist, but none is enabled with an enabled channel of weight > 0.
    NoAvailableChannel,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownModel => "no provider serves the model on this endpoint",
            Error::NotPermitted => {
                "providers serve the model, but the key's groups or multiplier ceiling exclude \
                 them all"
            }
            Error::NoAvailableChannel => {
                "no permitted provider is enabled with an enabled channel of weight > 0"
            }
        })
    }
}

impl core::error::Error for Error {}

/// Plans the attempts for `request` over `candidates` (in priority order, as the store answers
/// them), reading each channel's health from the channel.
///
/// See the [crate documentation](crate) for the policy.
pub fn plan<'a>(request: &Request<'a>, candidates: &[Candidate<'a>]) -> Result<Plan<'a>, Error> {
    if candidates.is_empty() {
        return Err(Error::UnknownModel);
    }
    let max_attempts = request.max_attempts.max(1);
    let mut rng = Rng::with_seed(request.seed);
    let mut permitted = false;
    let mut usable = false;
    let mut attempts = Vec::new();
    // The lanes the panic fallback would plan; only needed while no channel was healthy.
    let mut unhealthy_lanes: Vec<Lane<'_, 'a>> = Vec::new();
    for candidate in candidates {
        if !permits(request, candidate) {
            continue;
        }
        permitted = true;
        if !candidate.enabled {
            continue;
        }
        let channels = weighted_order(&candidate.channels, &mut rng);
        if channels.is_empty() {
            continue;
        }
        usable = true;
        let lane = Lane {
            candidate,
            channels,
        };
        let room = max_attempts.saturating_sub(attempts.len());
        attempts.extend(
            lane.channels
                .iter()
                .filter(|channel| channel.health.healthy)
                .take(lane.budget().min(room))
                .map(|channel| lane.attempt(request, channel)),
        );
        if attempts.len() >= max_attempts {
            // Later candidates could only add attempts past the cut.
            break;
        }
        if attempts.is_empty() {
            unhealthy_lanes.push(lane);
        }
    }
    if !permitted {
        return Err(Error::NotPermitted);
    }
    if !usable {
        return Err(Error::NoAvailableChannel);
    }
    if !attempts.is_empty() {
        return Ok(Plan {
            attempts,
            fallback: false,
        });
    }

    // Every usable channel is unhealthy: plan them anyway, least recently failed first.
    let mut fallback: Vec<(Option<TimestampMs>, Attempt<'a>)> = Vec::new();
    for lane in &unhealthy_lanes {
        let mut channels: Vec<&Channel<'a>> = lane.channels.iter().collect();
        // Stable sorts: ties keep the weighted order, then the provider order.
        channels.sort_by_key(|channel| channel.health.last_failure);
        fallback.extend(
            channels
                .into_iter()
                .take(lane.budget())
                .map(|channel| (channel.health.last_failure, lane.attempt(request, channel))),
        );
    }
    fallback.sort_by_key(|(last_failure, _)| *last_failure);
    // The order is only known once every lane is sorted in: cut after the (stable) sort.
    fallback.truncate(max_attempts);
    Ok(Plan {
        attempts: fallback.into_iter().map(|(_, attempt)| attempt).collect(),
        fallback: true,
    })
}

/// How many attempts `candidate` adds to a plan that is not the panic fallback: none when the
/// request may not use it, else its healthy usable channels, at most its retry budget. Once the
/// candidates read so far sum to the request's `max_attempts`, the ones after them change
/// nothing in the plan.
pub fn healthy_attempts(request: &Request<'_>, candidate: &Candidate<'_>) -> usize {
    if !candidate.enabled || !permits(request, candidate) {
        return 0;
    }
    let healthy = candidate
        .channels
        .iter()
        .filter(|channel| channel.usable() && channel.health.healthy)
        .count();
    healthy.min(retry_budget(candidate.max_retries))
}

/// Whether the request's multiplier ceiling and groups allow `candidate`.
fn permits(request: &Request<'_>, candidate: &Candidate<'_>) -> bool {
    if let Some(ceiling) = request.max_multiplier
        && candidate.multiplier > ceiling
    {
        return false;
    }
    match request.groups {
        None => true,
        Some([]) => candidate.groups.is_empty(),
        Some(groups) => candidate.groups.iter().any(|group| groups.contains(group)),
    }
}

/// How many attempts a provider of `max_retries` may get: `max_retries + 1`, or all (as many
/// as it has channels) for a negative one.
pub fn retry_budget(max_retries: i32) -> usize {
    usize::try_from(max_retries).map_or(usize::MAX, |retries| retries.saturating_add(1))
}

/// An eligible provider with its usable channels in weighted order.
struct Lane<'c, 'a> {
    candidate: &'c Candidate<'a>,
    channels: Vec<Channel<'a>>,
}

impl<'a> Lane<'_, 'a> {
    /// How many attempts the provider may get.
    fn budget(&self) -> usize {
        retry_budget(self.candidate.max_retries)
    }

    fn attempt(&self, request: &Request<'a>, channel: &Channel<'a>) -> Attempt<'a> {
        let upstream_model = match self.candidate.redirect {
            Some(redirect) if !redirect.is_empty() => redirect,
            _ => request.model,
        };
        Attempt {
            provider_id: self.candidate.provider_id,
            channel_id: channel.id,
            upstream_model,
            multiplier: self.candidate.multiplier,
        }
    }
}

/// The usable channels of `channels` in weighted random order without replacement: each draw
/// picks a remaining channel with probability proportional to its weight. Only `u64` draws, so
/// the order is the same on every platform for the same generator state.
fn weighted_order<'a>(channels: &[Channel<'a>], rng: &mut Rng) -> Vec<Channel<'a>> {
    let mut pool: Vec<Channel<'a>> = channels
        .iter()
        .filter(|channel| channel.usable())
        .copied()
        .collect();
    let mut total = pool.iter().fold(0u64, |sum, channel| {
        sum.saturating_add(u64::from(channel.weight))
    });
    let mut ordered = Vec::with_capacity(pool.len());
    while pool.len() > 1 && total > 0 {
        let mut draw = rng.u64(0..total);
        let mut pick = pool.len() - 1;
        for (index, channel) in pool.iter().enumerate() {
            let weight = u64::from(channel.weight);
            if draw < weight {
                pick = index;
                break;
            }
            draw -= weight;
        }
        let chosen = pool.remove(pick);
        total = total.saturating_sub(u64::from(chosen.weight));
        ordered.push(chosen);
    }
    ordered.append(&mut pool);
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Decimal = 1_000_000_000;

    fn channel(id: &str, weight: u32, enabled: bool) -> Channel<'_> {
        Channel {
            id,
            weight,
            enabled,
            health: Health::HEALTHY,
        }
    }

    fn provider<'a>(id: &'a str, channels: Vec<Channel<'a>>) -> Candidate<'a> {
        Candidate {
            provider_id: id,
            enabled: true,
            max_retries: -1,
            groups: &[],
            redirect: None,
            multiplier: ONE,
            channels,
        }
    }

    fn request(model: &str) -> Request<'_> {
        Request {
            model,
            max_multiplier: None,
            groups: None,
            seed: 7,
            max_attempts: usize::MAX,
        }
    }

    fn route<'a>(request: &Request<'a>, candidates: &[Candidate<'a>]) -> Result<Plan<'a>, Error> {
        plan(request, candidates)
    }

    /// Plans with each candidate's channel health set from `health`, asked with the ids of its
    /// channels (one answer per id; a missing one reads as healthy).
    fn plan_with<'a>(
        request: &Request<'a>,
        candidates: &[Candidate<'a>],
        health: impl Fn(&[&str]) -> Vec<Health>,
    ) -> Result<Plan<'a>, Error> {
        let mut candidates = candidates.to_vec();
        for candidate in &mut candidates {
            let ids: Vec<&str> = candidate
                .channels
                .iter()
                .map(|channel| channel.id)
                .collect();
            let mut answers = health(&ids).into_iter();
            for channel in &mut candidate.channels {
                channel.health = answers.next().unwrap_or(Health::HEALTHY);
            }
        }
        plan(request, &candidates)
    }

    fn channels_of(planned: &Plan<'_>) -> Vec<String> {
        planned
            .attempts
            .iter()
            .map(|attempt| format!("{}/{}", attempt.provider_id, attempt.channel_id))
            .collect()
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn providers_are_tried_in_the_given_order() {
        let candidates = [
            provider("a", vec![channel("a1", 1, true)]),
            provider("b", vec![channel("b1", 1, true)]),
            provider("c", vec![channel("c1", 1, true)]),
        ];
        let planned = route(&request("m"), &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["a/a1", "b/b1", "c/c1"]);
        assert!(!planned.fallback);
        assert!(
            planned
                .attempts
                .iter()
                .all(|attempt| attempt.upstream_model == "m" && attempt.multiplier == ONE)
        );
    }

    #[test]
    fn no_candidates_is_unknown_model() {
        assert_eq!(route(&request("m"), &[]), Err(Error::UnknownModel));
    }

    #[test]
    fn disabled_providers_are_skipped() {
        let mut off = provider("off", vec![channel("o1", 1, true)]);
        off.enabled = false;
        let candidates = [off.clone(), provider("on", vec![channel("n1", 1, true)])];
        let planned = route(&request("m"), &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["on/n1"]);
        assert_eq!(route(&request("m"), &[off]), Err(Error::NoAvailableChannel));
    }

    #[test]
    fn disabled_and_zero_weight_channels_are_never_planned() {
        let candidates = [provider(
            "p",
            vec![
                channel("off", 5, false),
                channel("zero", 0, true),
                channel("ok", 1, true),
            ],
        )];
        let planned = route(&request("m"), &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["p/ok"]);

        let unusable = [provider(
            "p",
            vec![channel("off", 5, false), channel("zero", 0, true)],
        )];
        assert_eq!(
            route(&request("m"), &unusable),
            Err(Error::NoAvailableChannel)
        );
    }

    #[test]
    fn multiplier_ceiling_filters_providers() {
        let mut cheap = provider("cheap", vec![channel("c1", 1, true)]);
        cheap.multiplier = ONE / 2;
        let mut exact = provider("exact", vec![channel("e1", 1, true)]);
        exact.multiplier = ONE;
        let mut dear = provider("dear", vec![channel("d1", 1, true)]);
        dear.multiplier = ONE + 1;
        let candidates = [dear.clone(), exact, cheap];

        let mut limited = request("m");
        limited.max_multiplier = Some(ONE);
        let planned = route(&limited, &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["exact/e1", "cheap/c1"]);
        assert_eq!(planned.attempts[1].multiplier, ONE / 2);

        assert_eq!(route(&limited, &[dear]), Err(Error::NotPermitted));
    }

    #[test]
    fn group_rules() {
        let open = provider("open", vec![channel("o1", 1, true)]);
        let staff_groups = groups(&["staff"]);
        let mut staff = provider("staff", vec![channel("s1", 1, true)]);
        staff.groups = &staff_groups;
        let both_groups = groups(&["vip", "staff"]);
        let mut both = provider("both", vec![channel("b1", 1, true)]);
        both.groups = &both_groups;
        let candidates = [open, staff, both];

        // None: any provider.
        let planned = route(&request("m"), &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["open/o1", "staff/s1", "both/b1"]);

        // Empty: only providers without groups.
        let none: Vec<String> = Vec::new();
        let mut ungrouped = request("m");
        ungrouped.groups = Some(&none);
        let planned = route(&ungrouped, &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["open/o1"]);

        // Non-empty: only providers sharing a group; an open provider does not.
        let vip = groups(&["vip"]);
        let mut vip_key = request("m");
        vip_key.groups = Some(&vip);
        let planned = route(&vip_key, &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["both/b1"]);

        let several = groups(&["nobody", "staff"]);
        let mut staff_key = request("m");
        staff_key.groups = Some(&several);
        let planned = route(&staff_key, &candidates).unwrap();
        assert_eq!(channels_of(&planned), ["staff/s1", "both/b1"]);

        let other = groups(&["other"]);
        let mut outsider = request("m");
        outsider.groups = Some(&other);
        assert_eq!(route(&outsider, &candidates), Err(Error::NotPermitted));
        assert_eq!(route(&vip_key, &candidates[..1]), Err(Error::NotPermitted));
    }

    #[test]
    fn not_permitted_wins_over_disabled() {
        let mut dear = provider("dear", vec![channel("d1", 1, true)]);
        dear.multiplier = 3 * ONE;
        dear.enabled = false;
        let mut limited = request("m");
        limited.max_multiplier = Some(ONE);
        assert_eq!(route(&limited, &[dear]), Err(Error::NotPermitted));
    }

    #[test]
    fn redirect_replaces_the_upstream_model_unless_empty() {
        let mut redirected = provider("r", vec![channel("r1", 1, true)]);
        redirected.redirect = Some("vendor-model-v2");
        let mut empty = provider("e", vec![channel("e1", 1, true)]);
        empty.redirect = Some("");
        let plain = provider("p", vec![channel("p1", 1, true)]);
        let planned = route(&request("gpt-x"), &[redirected, empty, plain]).unwrap();
        let models: Vec<&str> = planned
            .attempts
            .iter()
            .map(|attempt| attempt.upstream_model)
            .collect();
        assert_eq!(models, ["vendor-model-v2", "gpt-x", "gpt-x"]);
    }

    #[test]
    fn retry_budget() {
        let four = || {
            vec![
                channel("1", 1, true),
                channel("2", 1, true),
                channel("3", 1, true),
                channel("4", 1, true),
            ]
        };
        for (max_retries, expected) in [(-1, 4), (-7, 4), (0, 1), (1, 2), (3, 4), (10, 4)] {
            let mut candidate = provider("p", four());
            candidate.max_retries = max_retries;
            let planned = route(&request("m"), &[candidate]).unwrap();
            assert_eq!(
                planned.attempts.len(),
                expected,
                "max_retries {max_retries}"
            );
        }
        let mut huge = provider("p", four());
        huge.max_retries = i32::MAX;
        assert_eq!(route(&request("m"), &[huge]).unwrap().attempts.len(), 4);

        // The budget is per provider; the next provider follows.
        let mut first = provider("a", four());
        first.max_retries = 1;
        let second = provider("b", vec![channel("b1", 1, true)]);
        let planned = route(&request("m"), &[first, second]).unwrap();
        assert_eq!(planned.attempts.len(), 3);
        assert_eq!(planned.attempts[2].provider_id, "b");
    }

    #[test]
    fn budget_counts_healthy_channels_only() {
        let mut candidate = provider(
            "p",
            vec![
                channel("1", 1, true),
                channel("2", 1, true),
                channel("3", 1, true),
            ],
        );
        candidate.max_retries = 1;
        let planned = plan_with(&request("m"), &[candidate], |ids| {
            ids.iter()
                .map(|id| Health {
                    healthy: *id != "1",
                    last_failure: None,
                })
                .collect()
        })
        .unwrap();
        let ids: Vec<&str> = planned.attempts.iter().map(|a| a.channel_id).collect();
        assert_eq!(ids.len(), 2);
        assert!(!ids.contains(&"1"));
    }

    #[test]
    fn unhealthy_channels_are_skipped() {
        let candidates = [
            provider("a", vec![channel("a1", 1, true)]),
            provider("b", vec![channel("b1", 1, true)]),
        ];
        let planned = plan_with(&request("m"), &candidates, |ids| {
            ids.iter()
                .map(|id| Health {
                    healthy: *id != "a1",
                    last_failure: Some(5),
                })
                .collect()
        })
        .unwrap();
        assert_eq!(channels_of(&planned), ["b/b1"]);
        assert!(!planned.fallback);
    }

    #[test]
    fn panic_fallback_plans_unhealthy_channels_least_recently_failed_first() {
        let mut a = provider("a", vec![channel("a1", 1, true), channel("a2", 1, true)]);
        a.max_retries = 0;
        let candidates = [
            a,
            provider("b", vec![channel("b1", 1, true), channel("b2", 1, true)]),
            provider("c", vec![channel("c1", 1, true)]),
        ];
        let failed_at = |id: &str| match id {
            "a1" => Some(300),
            "a2" => Some(100),
            "b1" => Some(200),
            "b2" => Some(50),
            _ => None,
        };
        let planned = plan_with(&request("m"), &candidates, |ids| {
            ids.iter()
                .map(|id| Health {
                    healthy: false,
                    last_failure: failed_at(id),
                })
                .collect()
        })
        .unwrap();
        assert!(planned.fallback);
        // c1 never failed (oldest); a keeps one attempt (its budget), its least recent: a2.
        assert_eq!(channels_of(&planned), ["c/c1", "b/b2", "a/a2", "b/b1"]);
    }

    #[test]
    fn panic_fallback_ties_keep_provider_order() {
        let candidates = [
            provider("a", vec![channel("a1", 1, true)]),
            provider("b", vec![channel("b1", 1, true)]),
        ];
        let planned = plan_with(&request("m"), &candidates, |ids| {
            vec![
                Health {
                    healthy: false,
                    last_failure: Some(9),
                };
                ids.len()
            ]
        })
        .unwrap();
        assert!(planned.fallback);
        assert_eq!(channels_of(&planned), ["a/a1", "b/b1"]);
    }

    #[test]
    fn no_fallback_while_any_channel_is_healthy() {
        let candidates = [
            provider("a", vec![channel("a1", 1, true)]),
            provider("b", vec![channel("b1", 1, true)]),
        ];
        let planned = plan_with(&request("m"), &candidates, |ids| {
            ids.iter()
                .map(|id| Health {
                    healthy: *id == "b1",
                    last_failure: None,
                })
                .collect()
        })
        .unwrap();
        assert!(!planned.fallback);
        assert_eq!(channels_of(&planned), ["b/b1"]);
    }

    #[test]
    fn same_seed_same_plan() {
        let candidates = [
            provider(
                "a",
                (0..8)
                    .map(|i| {
                        channel(
                            ["0", "1", "2", "3", "4", "5", "6", "7"][i],
                            1 + i as u32,
                            true,
                        )
                    })
                    .collect(),
            ),
            provider("b", vec![channel("b1", 5, true), channel("b2", 5, true)]),
        ];
        let mut orders = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut req = request("m");
            req.seed = seed;
            let first = route(&req, &candidates).unwrap();
            let again = route(&req, &candidates).unwrap();
            assert_eq!(first, again, "seed {seed}");
            assert_eq!(first.attempts.len(), 10);
            orders.insert(channels_of(&first));
        }
        assert!(orders.len() > 100, "different seeds give different orders");
    }

    #[test]
    fn a_known_seed_gives_a_known_order() {
        // Pins the generator and the draw: a change here changes every deployed plan, and the
        // component and a native caller must agree on it.
        let candidates = [provider(
            "p",
            vec![
                channel("a", 1, true),
                channel("b", 2, true),
                channel("c", 3, true),
            ],
        )];
        let mut req = request("m");
        req.seed = 42;
        let order = channels_of(&route(&req, &candidates).unwrap());
        assert_eq!(order, ["p/c", "p/b", "p/a"]);
        let orders: Vec<String> = (0..6)
            .map(|seed| {
                req.seed = seed;
                channels_of(&route(&req, &candidates).unwrap()).join(" ")
            })
            .collect();
        assert_eq!(
            orders,
            [
                "p/c p/a p/b",
                "p/c p/b p/a",
                "p/b p/c p/a",
                "p/c p/a p/b",
                "p/a p/c p/b",
                "p/b p/a p/c",
            ]
        );
    }

    #[test]
    fn first_position_follows_weights() {
        let candidates = [provider(
            "p",
            vec![channel("light", 1, true), channel("heavy", 3, true)],
        )];
        let runs = 10_000u64;
        let mut heavy_first = 0u64;
        for seed in 0..runs {
            let mut req = request("m");
            req.seed = seed;
            let planned = route(&req, &candidates).unwrap();
            assert_eq!(planned.attempts.len(), 2);
            if planned.attempts[0].channel_id == "heavy" {
                heavy_first += 1;
            }
        }
        // Expected 7,500; the standard deviation is about 43, so ±300 is ~7 sigma.
        assert!(
            (7_200..=7_800).contains(&heavy_first),
            "heavy first {heavy_first} of {runs}"
        );
    }

    #[test]
    fn positions_follow_weights_over_three_channels() {
        let candidates = [provider(
            "p",
            vec![
                channel("w1", 1, true),
                channel("w2", 2, true),
                channel("w7", 7, true),
            ],
        )];
        let mut firsts = [0u32; 3];
        for seed in 0..10_000 {
            let mut req = request("m");
            req.seed = seed;
            let planned = route(&req, &candidates).unwrap();
            let index = match planned.attempts[0].channel_id {
                "w1" => 0,
                "w2" => 1,
                _ => 2,
            };
            firsts[index] += 1;
        }
        // Expected 1,000 / 2,000 / 7,000.
        assert!((850..=1_150).contains(&firsts[0]), "{firsts:?}");
        assert!((1_800..=2_200).contains(&firsts[1]), "{firsts:?}");
        assert!((6_750..=7_250).contains(&firsts[2]), "{firsts:?}");
    }

    #[test]
    fn enormous_weights_do_not_overflow() {
        let candidates = [provider(
            "p",
            vec![
                channel("a", u32::MAX, true),
                channel("b", u32::MAX, true),
                channel("c", u32::MAX, true),
            ],
        )];
        for seed in 0..100 {
            let mut req = request("m");
            req.seed = seed;
            assert_eq!(route(&req, &candidates).unwrap().attempts.len(), 3);
        }
    }

    /// Six providers of mixed budgets and weights (one disabled, one with unusable channels):
    /// up to 19 attempts uncapped.
    fn capped_store() -> Vec<Candidate<'static>> {
        const IDS: [[&str; 5]; 6] = [
            ["a0", "a1", "a2", "a3", "a4"],
            ["b0", "b1", "b2", "b3", "b4"],
            ["c0", "c1", "c2", "c3", "c4"],
            ["d0", "d1", "d2", "d3", "d4"],
            ["e0", "e1", "e2", "e3", "e4"],
            ["f0", "f1", "f2", "f3", "f4"],
        ];
        const PROVIDERS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
        let mut candidates: Vec<Candidate<'static>> = PROVIDERS
            .iter()
            .zip(IDS)
            .enumerate()
            .map(|(p, (id, channels))| {
                let channels = channels
                    .into_iter()
                    .enumerate()
                    .map(|(c, channel_id)| {
                        channel(channel_id, 1 + (p as u32 * 3 + c as u32) % 7, true)
                    })
                    .collect();
                provider(id, channels)
            })
            .collect();
        candidates[1].max_retries = 1;
        candidates[2].enabled = false;
        candidates[3].channels[0].enabled = false;
        candidates[3].channels[1].weight = 0;
        candidates[4].max_retries = 0;
        candidates
    }

    /// Health where the channels whose id ends in one of `down` are unhealthy, each failed at a
    /// time taken from its id (so the fallback order is not the plan order).
    fn health_where(down: &'static [char]) -> impl Fn(&[&str]) -> Vec<Health> {
        move |ids| {
            ids.iter()
                .map(|id| {
                    let unhealthy = id.ends_with(down);
                    let last_failure = id.bytes().rev().map(i64::from).reduce(|a, b| a * 7 + b);
                    Health {
                        healthy: !unhealthy,
                        last_failure: unhealthy.then_some(last_failure).flatten(),
                    }
                })
                .collect()
        }
    }

    #[test]
    fn a_capped_plan_is_a_prefix_of_the_uncapped_one() {
        let candidates = capped_store();
        let all_down: &'static [char] = &['0', '1', '2', '3', '4'];
        let healths: [&'static [char]; 3] = [&[], &['0', '3'], all_down];
        for down in healths {
            let health = health_where(down);
            for seed in [0, 1, 2, 7, 42, 1_000, u64::MAX] {
                let mut req = request("m");
                req.seed = seed;
                let uncapped = plan_with(&req, &candidates, &health).unwrap();
                assert_eq!(uncapped.fallback, down == all_down);
                assert!(
                    uncapped.attempts.len() > 8,
                    "seed {seed}: a plan worth cutting"
                );
                for cap in 1..=uncapped.attempts.len() + 2 {
                    req.max_attempts = cap;
                    let capped = plan_with(&req, &candidates, &health).unwrap();
                    let len = cap.min(uncapped.attempts.len());
                    assert_eq!(
                        capped.attempts,
                        uncapped.attempts[..len],
                        "seed {seed}, cap {cap}, down {down:?}"
                    );
                    assert_eq!(capped.fallback, uncapped.fallback);
                }
            }
        }
    }

    #[test]
    fn max_attempts_one_gives_one_attempt() {
        let candidates = capped_store();
        for down in [&[][..], &['0', '1', '2', '3', '4'][..]] {
            let health = health_where(down);
            for seed in 0..20 {
                let mut req = request("m");
                req.seed = seed;
                let first = plan_with(&req, &candidates, &health).unwrap().attempts[0];
                req.max_attempts = 1;
                let planned = plan_with(&req, &candidates, &health).unwrap();
                assert_eq!(planned.attempts, [first], "seed {seed}");
                req.max_attempts = 0;
                let planned = plan_with(&req, &candidates, &health).unwrap();
                assert_eq!(planned.attempts, [first], "0 reads as 1");
            }
        }
    }

    #[test]
    fn a_large_store_is_cut_at_max_attempts() {
        let ids: Vec<String> = (0..5_000).map(|i| format!("c{i}")).collect();
        let candidates: Vec<Candidate<'_>> = ids
            .chunks(5)
            .map(|chunk| {
                provider(
                    &chunk[0],
                    chunk.iter().map(|id| channel(id, 1, true)).collect(),
                )
            })
            .collect();
        let mut req = request("m");
        req.max_attempts = 32;
        let planned = route(&req, &candidates).unwrap();
        assert_eq!(planned.attempts.len(), 32);
        // The first seven providers, in order: five, five, … and two of the seventh.
        assert_eq!(planned.attempts[31].provider_id, "c30");
    }

    #[test]
    fn candidates_after_a_full_prefix_change_nothing() {
        let all_down: &'static [char] = &['0', '1', '2', '3', '4'];
        let healths: [&'static [char]; 3] = [&[], &['0', '3'], all_down];
        for down in healths {
            let health = health_where(down);
            let mut candidates = capped_store();
            for candidate in &mut candidates {
                let ids: Vec<&str> = candidate.channels.iter().map(|c| c.id).collect();
                for (channel, answer) in candidate.channels.iter_mut().zip(health(&ids)) {
                    channel.health = answer;
                }
            }
            for seed in [0, 3, 42] {
                for cap in 1..=20 {
                    let mut req = request("m");
                    req.seed = seed;
                    req.max_attempts = cap;
                    let whole = plan(&req, &candidates).unwrap();
                    let mut offered = 0;
                    let full = candidates.iter().position(|candidate| {
                        offered += healthy_attempts(&req, candidate);
                        offered >= cap
                    });
                    if let Some(last) = full {
                        let prefix = plan(&req, &candidates[..=last]).unwrap();
                        assert_eq!(prefix, whole, "seed {seed}, cap {cap}, down {down:?}");
                    } else {
                        assert!(whole.attempts.len() < cap || whole.fallback);
                    }
                }
            }
        }
    }

    #[test]
    fn odd_model_names_do_not_panic() {
        let huge = "x".repeat(64 * 1024);
        let names: [&str; 5] = ["", &huge, "模型-ü-🚀", "a\0b\u{7}\n\r\t", "\u{202e}rtl"];
        for name in names {
            let mut redirected = provider("r", vec![channel("r1", 1, true)]);
            redirected.redirect = Some(name);
            let candidates = [redirected, provider("p", vec![channel("p1", 1, true)])];
            let req = Request {
                model: name,
                max_multiplier: Some(0),
                groups: None,
                seed: u64::MAX,
                max_attempts: 32,
            };
            assert_eq!(plan(&req, &candidates), Err(Error::NotPermitted));
            let req = Request {
                max_multiplier: None,
                ..req
            };
            let planned = plan(&req, &candidates).unwrap();
            assert_eq!(planned.attempts[1].upstream_model, name);
            assert_eq!(planned.attempts.len(), 2);
        }
    }
}
