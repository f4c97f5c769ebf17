//! The route phase: ask the router plugin for a plan, then check every attempt against the
//! host's own view before anything is sent (DESIGN §4). A plugin can reorder and choose among
//! legal attempts; an illegal one refuses the whole plan and counts as the plugin's failure.

use std::sync::Arc;

use crate::plugins::{PluginError, PluginErrorKind, RouterPlugin};
use crate::routing::{
    Attempt, HealthRegistry, RouteRefusal, RouteRequest, RoutingSnapshot, SharedSnapshot,
    validate_plan,
};

/// The most attempts the host makes for one request. Routers are told (`max-attempts`) and
/// should plan no more; a longer plan is cut here, before it is validated, since attempts past
/// this many upstream failures would never be reached.
pub const MAX_ATTEMPTS_PER_REQUEST: usize = 32;

/// A validated plan, with the snapshot it was made and checked against: the forwarder
/// resolves channels in the same snapshot, so a concurrent routing write cannot change what
/// the plan means.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The snapshot the plan was validated against.
    pub snapshot: Arc<RoutingSnapshot>,
    /// The attempts, in order; never empty, at most [`MAX_ATTEMPTS_PER_REQUEST`].
    pub attempts: Vec<Attempt>,
}

/// Why the route phase produced no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteFailure {
    /// The router declined to route the request.
    #[error(transparent)]
    Refused(#[from] RouteRefusal),
    /// The router failed, or proposed an illegal plan.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The route phase: a router plugin over the live snapshot and channel health.
#[derive(Clone)]
pub struct RoutePhase {
    plugin: RouterPlugin,
    snapshot: SharedSnapshot,
    health: HealthRegistry,
}

impl RoutePhase {
    /// The phase with `plugin` deciding over `snapshot` and `health`.
    pub fn new(plugin: RouterPlugin, snapshot: SharedSnapshot, health: HealthRegistry) -> Self {
        RoutePhase {
            plugin,
            snapshot,
            health,
        }
    }

    /// The router in use.
    pub fn plugin(&self) -> &RouterPlugin {
        &self.plugin
    }

    /// Plans `request`: the plugin's attempts, each checked legal.
    pub async fn plan(&self, request: &RouteRequest) -> Result<RoutePlan, RouteFailure> {
        let snapshot = self.snapshot.current();
        let mut attempts = self
            .plugin
            .route(request, Arc::clone(&snapshot), self.health.clone())
            .await??;
        attempts.truncate(MAX_ATTEMPTS_PER_REQUEST);
        validate_plan(&snapshot, request, &attempts).map_err(|violation| {
            PluginError::new(
                self.plugin.name(),
                PluginErrorKind::ContractViolation(violation.to_string()),
            )
        })?;
        if attempts.is_empty() {
            return Err(RouteRefusal::NoAvailableChannel(format!(
                "the router planned no attempt for `{}`",
                request.model
            ))
            .into());
        }
        Ok(RoutePlan { snapshot, attempts })
    }
}
