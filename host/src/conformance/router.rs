//! The router suite. Contract checks hold for any router; reference checks (`--reference`)
//! hold for the Monoize waterfall that the default router implements.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{self, ONE, ProviderSpec};
use super::{CheckOutcome, Report};
use crate::money::Multiplier;
use crate::plugins::{PluginEngine, PluginError, PluginErrorKind, RouterPlugin};
use crate::routing::{
    Attempt, EndpointKind, HealthPolicy, HealthRegistry, RouteRefusal, RouteRequest,
    RoutingSnapshot, groups_permit, validate_plan,
};

/// The contract checks, in the order they run.
pub const CONTRACT_CHECKS: &[&str] = &[
    "loads",
    "serves-a-simple-store",
    "legal-plans",
    "max-multiplier",
    "groups",
    "unknown-model",
    "empty-store",
    "deterministic",
    "large-store",
    "hostile-input",
];

/// The reference checks `--reference` adds.
pub const REFERENCE_CHECKS: &[&str] = &[
    "reference-priority-order",
    "reference-filters",
    "reference-groups",
    "reference-redirect",
    "reference-retry-budget",
    "reference-weighted-order",
    "reference-panic-fallback",
];

/// Seeds each property is checked under.
const SEEDS: u64 = 20;

type RouteOutcome = Result<Vec<Attempt>, RouteRefusal>;

/// Runs the router suite on the component `bytes` named `name`.
pub async fn check(engine: &PluginEngine, name: &str, bytes: &[u8], reference: bool) -> Report {
    let names: Vec<&'static str> = CONTRACT_CHECKS
        .iter()
        .chain(if reference { REFERENCE_CHECKS } else { &[] })
        .copied()
        .collect();
    let loaded = RouterPlugin::load(engine, name, bytes)
        .map(|plugin| Suite {
            plugin,
            health: HealthRegistry::new(HealthPolicy::default()),
        })
        .map_err(|error| error.to_string());
    super::run_checks("router", name, &names, loaded).await
}

struct Suite {
    plugin: RouterPlugin,
    health: HealthRegistry,
}

impl super::Suite for Suite {
    async fn run(&self, check: &str) -> CheckOutcome {
        self.run_check(check).await
    }
}

impl Suite {
    async fn run_check(&self, check: &str) -> CheckOutcome {
        match check {
            "loads" => Ok(()),
            "serves-a-simple-store" => self.serves_a_simple_store().await,
            "legal-plans" => self.legal_plans().await,
            "max-multiplier" => self.max_multiplier().await,
            "groups" => self.groups().await,
            "unknown-model" => self.unknown_model().await,
            "empty-store" => self.empty_store().await,
            "deterministic" => self.deterministic().await,
            "large-store" => self.large_store().await,
            "hostile-input" => self.hostile_input().await,
            "reference-priority-order" => self.reference_priority_order().await,
            "reference-filters" => self.reference_filters().await,
            "reference-groups" => self.reference_groups().await,
            "reference-redirect" => self.reference_redirect().await,
            "reference-retry-budget" => self.reference_retry_budget().await,
            "reference-weighted-order" => self.reference_weighted_order().await,
            "reference-panic-fallback" => self.reference_panic_fallback().await,
            other => Err(format!("no such check `{other}`")),
        }
    }

    async fn route(
        &self,
        store: &Arc<RoutingSnapshot>,
        request: &RouteRequest,
    ) -> Result<RouteOutcome, String> {
        self.route_with(store, request, &self.health).await
    }

    async fn route_with(
        &self,
        store: &Arc<RoutingSnapshot>,
        request: &RouteRequest,
        health: &HealthRegistry,
    ) -> Result<RouteOutcome, String> {
        self.plugin
            .route(request, Arc::clone(store), health.clone())
            .await
            .map_err(|error: PluginError| {
                format!("{} (model {:?})", error, shorten(&request.model))
            })
    }

    /// A plan the plugin must give, else the reason it did not.
    async fn plan(
        &self,
        store: &Arc<RoutingSnapshot>,
        request: &RouteRequest,
    ) -> Result<Vec<Attempt>, String> {
        self.route(store, request)
            .await?
            .map_err(|refusal| format!("refused to route {:?}: {refusal}", shorten(&request.model)))
    }

    async fn serves_a_simple_store(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("only", 0)
                .model("m", None, ONE)
                .channel("c", 1, true),
        ])
        .await?;
        let attempts = self.plan(&store, &request("m", 0)).await?;
        if attempts.is_empty() {
            return Err("answered an empty plan for a servable request".to_owned());
        }
        validate_plan(&store, &request("m", 0), &attempts)
            .map_err(|violation| violation.to_string())
    }

    async fn legal_plans(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        for &model in fixtures::VARIED_MODELS {
            for endpoint in [
                EndpointKind::ChatCompletions,
                EndpointKind::Messages,
                EndpointKind::Responses,
            ] {
                for seed in 0..SEEDS {
                    let mut req = request(model, seed);
                    req.endpoint = endpoint;
                    if let Ok(attempts) = self.route(&store, &req).await? {
                        validate_plan(&store, &req, &attempts).map_err(|violation| {
                            format!("{model} on {endpoint:?}, seed {seed}: {violation}")
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn max_multiplier(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        for ceiling in [ONE / 2, ONE, ONE + ONE / 4] {
            for &model in fixtures::VARIED_MODELS {
                for seed in 0..SEEDS {
                    let mut req = request(model, seed);
                    req.max_multiplier = Some(Multiplier::from_nanos(ceiling));
                    let Ok(attempts) = self.route(&store, &req).await? else {
                        continue;
                    };
                    for attempt in &attempts {
                        let stored = store
                            .provider(&attempt.provider_id)
                            .and_then(|provider| provider.entry(model))
                            .map(|entry| entry.multiplier);
                        if let Some(multiplier) = stored.filter(|m| m.nanos() > ceiling) {
                            return Err(format!(
                                "planned `{}` at multiplier {multiplier} under the ceiling {}",
                                attempt.provider_id,
                                Multiplier::from_nanos(ceiling)
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn groups(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        let key_groups: [&[&str]; 4] = [&[], &["a"], &["b"], &["zzz"]];
        for groups in key_groups {
            let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            for &model in fixtures::VARIED_MODELS {
                for seed in 0..SEEDS {
                    let mut req = request(model, seed);
                    req.groups = Some(groups.clone());
                    let Ok(attempts) = self.route(&store, &req).await? else {
                        continue;
                    };
                    for attempt in &attempts {
                        let Some(provider) = store.provider(&attempt.provider_id) else {
                            continue;
                        };
                        if !groups_permit(Some(&groups), &provider.groups) {
                            return Err(format!(
                                "planned `{}` (groups {:?}) for a key of groups {groups:?}",
                                provider.name, provider.groups
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn unknown_model(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        match self.route(&store, &request("no-such-model", 0)).await? {
            Err(_) => Ok(()),
            Ok(attempts) => Err(format!(
                "answered a plan of {} attempts instead of a route-error",
                attempts.len()
            )),
        }
    }

    async fn empty_store(&self) -> CheckOutcome {
        let store = store(Vec::new()).await?;
        match self.route(&store, &request("gpt-4o", 0)).await? {
            Err(_) => Ok(()),
            Ok(attempts) => Err(format!(
                "answered a plan of {} attempts instead of a route-error",
                attempts.len()
            )),
        }
    }

    async fn deterministic(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        for seed in 0..SEEDS {
            let req = request("gpt-4o", seed);
            let first = self.route(&store, &req).await?;
            let second = self.route(&store, &req).await?;
            if first != second {
                return Err(format!(
                    "seed {seed} gave two different answers: {first:?} and {second:?}"
                ));
            }
        }
        Ok(())
    }

    async fn large_store(&self) -> CheckOutcome {
        let store = store(fixtures::large_store(1000, 5, "m")).await?;
        let request = request("m", 7);
        // The bound is wall time: a machine busy with other work can stretch one call past it.
        // A router that is slow itself is slow twice.
        let mut answer = self
            .plugin
            .route(&request, Arc::clone(&store), self.health.clone())
            .await;
        if matches!(&answer, Err(error) if matches!(error.kind, PluginErrorKind::Timeout { .. })) {
            answer = self
                .plugin
                .route(&request, Arc::clone(&store), self.health.clone())
                .await;
        }
        let answer =
            answer.map_err(|error| format!("{error} (model {:?})", shorten(&request.model)))?;
        if let Ok(attempts) = answer {
            validate_plan(&store, &request, &attempts)
                .map_err(|violation| violation.to_string())?;
        }
        Ok(())
    }

    async fn hostile_input(&self) -> CheckOutcome {
        let store = store(fixtures::varied_store()).await?;
        let huge = "x".repeat(64 * 1024);
        for model in ["", huge.as_str(), "模型🚀", "\u{0}\u{1b}[31m\n"] {
            let req = request(model, 0);
            if let Ok(attempts) = self.route(&store, &req).await? {
                validate_plan(&store, &req, &attempts)
                    .map_err(|violation| violation.to_string())?;
            }
        }
        Ok(())
    }

    async fn reference_priority_order(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("late", 20)
                .model("m", None, ONE)
                .channel("late-1", 1, true),
            ProviderSpec::new("first", 0)
                .model("m", None, ONE)
                .channel("first-1", 1, true),
            ProviderSpec::new("middle", 10)
                .model("m", None, ONE)
                .channel("middle-1", 1, true),
            ProviderSpec::new("elsewhere", -5)
                .model("other", None, ONE)
                .channel("else-1", 1, true),
        ])
        .await?;
        let attempts = self.plan(&store, &request("m", 0)).await?;
        expect_eq(
            "provider order",
            provider_names(&store, &attempts),
            ["first", "middle", "late"],
        )
    }

    async fn reference_filters(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("off", 0)
                .model("m", None, ONE)
                .channel("off-1", 1, true)
                .disabled(),
            ProviderSpec::new("pricey", 1)
                .model("m", None, 2 * ONE)
                .channel("pricey-1", 1, true),
            ProviderSpec::new("on", 2)
                .model("m", None, ONE)
                .channel("on-live", 1, true)
                .channel("on-zero", 0, true)
                .channel("on-disabled", 5, false),
        ])
        .await?;
        let attempts = self.plan(&store, &request("m", 0)).await?;
        expect_eq(
            "channels without a ceiling",
            channel_names(&store, &attempts),
            ["pricey-1", "on-live"],
        )?;
        let mut capped = request("m", 0);
        capped.max_multiplier = Some(Multiplier::ONE);
        let attempts = self.plan(&store, &capped).await?;
        expect_eq(
            "channels under ceiling 1",
            channel_names(&store, &attempts),
            ["on-live"],
        )
    }

    async fn reference_groups(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("open", 0)
                .model("m", None, ONE)
                .channel("open-1", 1, true),
            ProviderSpec::new("team-a", 1)
                .model("m", None, ONE)
                .channel("a-1", 1, true)
                .groups(&["a"]),
            ProviderSpec::new("team-ab", 2)
                .model("m", None, ONE)
                .channel("ab-1", 1, true)
                .groups(&["a", "b"]),
        ])
        .await?;
        let cases: [(Option<&[&str]>, &[&str]); 3] = [
            (None, &["open", "team-a", "team-ab"]),
            (Some(&[]), &["open"]),
            (Some(&["b"]), &["team-ab"]),
        ];
        for (groups, expected) in cases {
            let mut req = request("m", 0);
            req.groups = groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect());
            let attempts = self.plan(&store, &req).await?;
            expect_eq(
                &format!("providers for groups {groups:?}"),
                provider_names(&store, &attempts),
                expected,
            )?;
        }
        Ok(())
    }

    async fn reference_redirect(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("azure", 0)
                .model("gpt-4o", Some("gpt-4o-2024-08-06"), ONE)
                .channel("az", 1, true),
            ProviderSpec::new("blank", 1)
                .model("gpt-4o", Some(""), ONE)
                .channel("bl", 1, true),
        ])
        .await?;
        let attempts = self.plan(&store, &request("gpt-4o", 0)).await?;
        let upstream: Vec<&str> = attempts.iter().map(|a| a.upstream_model.as_str()).collect();
        expect_eq("upstream models", upstream, ["gpt-4o-2024-08-06", "gpt-4o"])
    }

    async fn reference_retry_budget(&self) -> CheckOutcome {
        let four = |name: &str, priority, retries| {
            (0..4)
                .fold(
                    ProviderSpec::new(name, priority).model("m", None, ONE),
                    |spec, c| spec.channel(&format!("{name}-{c}"), 1, true),
                )
                .max_retries(retries)
        };
        let store = store(vec![
            four("none", 0, 0),
            four("one", 1, 1),
            four("all", 2, -1),
            four("ten", 3, 10),
        ])
        .await?;
        let attempts = self.plan(&store, &request("m", 0)).await?;
        let names = provider_names_all(&store, &attempts);
        let count = |name: &str| names.iter().filter(|n| **n == name).count();
        expect_eq(
            "attempts per provider",
            [count("none"), count("one"), count("all"), count("ten")],
            [1, 2, 4, 4],
        )
    }

    async fn reference_weighted_order(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("p", 0)
                .model("m", None, ONE)
                .channel("light", 1, true)
                .channel("heavy", 3, true),
        ])
        .await?;
        let trials = 2_000u64;
        let mut heavy_first = 0u64;
        for trial in 0..trials {
            let attempts = self
                .plan(
                    &store,
                    &request("m", trial.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                )
                .await?;
            if channel_names(&store, &attempts).first() == Some(&"heavy") {
                heavy_first += 1;
            }
        }
        // Weights 1:3 put `heavy` first 75% of the time; at n = 2000 one standard deviation is
        // ~1%, so the ±5% band is over five deviations wide.
        let share = heavy_first as f64 / trials as f64;
        if (0.70..=0.80).contains(&share) {
            Ok(())
        } else {
            Err(format!(
                "the weight-3 channel came first in {:.1}% of plans, not ~75%",
                share * 100.0
            ))
        }
    }

    async fn reference_panic_fallback(&self) -> CheckOutcome {
        let store = store(vec![
            ProviderSpec::new("p", 0)
                .model("m", None, ONE)
                .channel("sick", 1, true)
                .channel("well", 1, true),
            ProviderSpec::new("q", 1)
                .model("m", None, ONE)
                .channel("also-sick", 1, true),
        ])
        .await?;
        let health = HealthRegistry::new(HealthPolicy::default());
        let id_of = |name: &str| channel_id(&store, name);
        health.trip(&id_of("sick"), None);
        let attempts = self.plan_with(&store, &request("m", 0), &health).await?;
        expect_eq(
            "healthy channels",
            channel_names(&store, &attempts),
            ["well", "also-sick"],
        )?;
        // Distinct failure times, so "least recently failed first" has one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
        health.trip(&id_of("well"), None);
        tokio::time::sleep(Duration::from_millis(3)).await;
        health.trip(&id_of("also-sick"), None);
        let attempts = self.plan_with(&store, &request("m", 0), &health).await?;
        expect_eq(
            "fallback with nothing healthy",
            channel_names(&store, &attempts),
            ["sick", "well", "also-sick"],
        )
    }

    async fn plan_with(
        &self,
        store: &Arc<RoutingSnapshot>,
        request: &RouteRequest,
        health: &HealthRegistry,
    ) -> Result<Vec<Attempt>, String> {
        self.route_with(store, request, health)
            .await?
            .map_err(|refusal| format!("refused to route: {refusal}"))
    }
}

async fn store(providers: Vec<ProviderSpec>) -> Result<Arc<RoutingSnapshot>, String> {
    fixtures::store(providers)
        .await
        .map_err(|error| format!("fixture store: {error}"))
}

fn request(model: &str, seed: u64) -> RouteRequest {
    RouteRequest {
        request_id: format!("conformance-{seed}"),
        model: model.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        max_multiplier: None,
        groups: None,
        seed,
    }
}

/// Provider names in plan order, each once per run of consecutive attempts.
fn provider_names<'a>(store: &'a RoutingSnapshot, attempts: &[Attempt]) -> Vec<&'a str> {
    let mut names = provider_names_all(store, attempts);
    names.dedup();
    names
}

fn provider_names_all<'a>(store: &'a RoutingSnapshot, attempts: &[Attempt]) -> Vec<&'a str> {
    attempts
        .iter()
        .map(|a| {
            store
                .provider(&a.provider_id)
                .map_or("<unknown>", |p| p.name.as_str())
        })
        .collect()
}

fn channel_names<'a>(store: &'a RoutingSnapshot, attempts: &[Attempt]) -> Vec<&'a str> {
    attempts
        .iter()
        .map(|a| {
            store
                .provider(&a.provider_id)
                .and_then(|p| p.channel(&a.channel_id))
                .map_or("<unknown>", |c| c.name.as_str())
        })
        .collect()
}

fn channel_id(store: &RoutingSnapshot, name: &str) -> String {
    let by_name: HashMap<&str, &str> = store
        .providers()
        .iter()
        .flat_map(|p| p.channels.iter().map(|c| (c.name.as_str(), c.id.as_str())))
        .collect();
    by_name
        .get(name)
        .map_or_else(String::new, |id| (*id).to_owned())
}

fn expect_eq<T, U>(what: &str, got: T, want: U) -> CheckOutcome
where
    T: PartialEq<U> + std::fmt::Debug,
    U: std::fmt::Debug,
{
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}"))
    }
}

fn shorten(model: &str) -> String {
    match model.char_indices().nth(40) {
        Some((cut, _)) => format!("{}… ({} bytes)", &model[..cut], model.len()),
        None => model.to_owned(),
    }
}
