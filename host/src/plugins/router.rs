//! The router world: load a routing component and ask it for plans. The plan that comes back
//! is the plugin's word only; `gateway::route` validates it before the host acts on it.

use std::sync::Arc;

use wasmtime::component::HasSelf;

use super::PluginError;
use super::engine::PluginEngine;
use super::instances::{InstanceCounts, Instances, KEEP_IDLE, world};
use super::load::load_world;
use super::routing_store::endpoint_to_wit;
use super::store::{Capabilities, PluginState};
use super::wit::latest::{ROUTER_IMPORTS, Router, RouterPre, types};
use crate::money::Multiplier;
use crate::routing::{Attempt, HealthRegistry, RouteRefusal, RouteRequest, RoutingSnapshot};

/// A loaded routing plugin and its instances.
#[derive(Clone)]
pub struct RouterPlugin {
    instances: Instances<Router>,
}

world!(Router, RouterPre);

impl RouterPlugin {
    /// Loads the component `bytes` as router `name`.
    pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let loaded = load_world(
            engine,
            name,
            bytes,
            "router",
            ROUTER_IMPORTS,
            |linker| Router::add_to_linker::<_, HasSelf<PluginState>>(linker, |state| state),
            RouterPre::new,
        )?;
        Ok(RouterPlugin {
            instances: Instances::new(loaded, KEEP_IDLE),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.instances.loaded().name
    }

    /// Instances started so far, and idle now.
    pub fn instance_counts(&self) -> InstanceCounts {
        self.instances.counts()
    }

    /// The linear memories one instance creates: the pool memories each instance takes.
    pub fn memories(&self) -> u32 {
        self.instances.loaded().memories
    }

    /// Asks the plugin for a plan for `request` over `snapshot` and `health`. The outer error
    /// is the plugin failing; the inner one is the plugin refusing to route.
    pub async fn route(
        &self,
        request: &RouteRequest,
        snapshot: Arc<RoutingSnapshot>,
        health: HealthRegistry,
    ) -> Result<Result<Vec<Attempt>, RouteRefusal>, PluginError> {
        let capabilities = Capabilities {
            routing: Some(snapshot),
            health: Some(health),
            ..Capabilities::default()
        };
        let mut instance = self
            .instances
            .take(request.request_id.clone(), capabilities)
            .await?;
        let outcome = instance
            .bindings
            .call_route(&mut instance.store, &request_to_wit(request))
            .await;
        Ok(match self.instances.finish(instance, outcome)? {
            Ok(plan) => Ok(plan.attempts.into_iter().map(attempt_from_wit).collect()),
            Err(refusal) => Err(refusal_from_wit(refusal)),
        })
    }
}

fn request_to_wit(request: &RouteRequest) -> types::RouteRequest {
    types::RouteRequest {
        request_id: request.request_id.clone(),
        model: request.model.clone(),
        endpoint: endpoint_to_wit(request.endpoint),
        max_multiplier: request.max_multiplier.map(Multiplier::nanos),
        groups: request.groups.clone(),
        seed: request.seed,
        max_attempts: u32::try_from(crate::gateway::route::MAX_ATTEMPTS_PER_REQUEST)
            .unwrap_or(u32::MAX),
    }
}

fn attempt_from_wit(attempt: types::Attempt) -> Attempt {
    Attempt {
        provider_id: attempt.provider_id,
        channel_id: attempt.channel_id,
        upstream_model: attempt.upstream_model,
        multiplier: Multiplier::from_nanos(attempt.multiplier),
    }
}

fn refusal_from_wit(refusal: types::RouteError) -> RouteRefusal {
    match refusal {
        types::RouteError::UnknownModel(message) => RouteRefusal::UnknownModel(message),
        types::RouteError::NotPermitted(message) => RouteRefusal::NotPermitted(message),
        types::RouteError::NoAvailableChannel(message) => RouteRefusal::NoAvailableChannel(message),
        types::RouteError::Failed(message) => RouteRefusal::Failed(message),
    }
}
