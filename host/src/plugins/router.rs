//! The router world: load a routing component and ask it for plans. The plan that comes back
//! is the plugin's word only; `gateway::route` validates it before the host acts on it.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::engine::{PluginEngine, memories_of};
use super::load::load_component;
use super::routing_store::endpoint_to_wit;
use super::store::{Capabilities, PluginState, new_store};
use super::wit::latest::{ROUTER_IMPORTS, Router, RouterPre, types};
use super::{PluginError, call_failure};
use crate::money::Multiplier;
use crate::routing::{Attempt, HealthRegistry, RouteRefusal, RouteRequest, RoutingSnapshot};

/// A loaded routing plugin, ready to instantiate per call.
#[derive(Clone)]
pub struct RouterPlugin {
    name: Arc<str>,
    engine: PluginEngine,
    pre: RouterPre<PluginState>,
    /// The linear memories one instance creates (its share of the pool).
    memories: u32,
}

impl RouterPlugin {
    /// Loads the component `bytes` as router `name`.
    pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let linker = router_linker(engine, name)?;
        let instance_pre = load_component(engine, &linker, name, bytes, ROUTER_IMPORTS)?;
        let memories = memories_of(instance_pre.component());
        let pre = RouterPre::new(instance_pre).map_err(|error| {
            PluginError::new(
                name,
                super::PluginErrorKind::Load(format!(
                    "does not export the router world: {error:#}"
                )),
            )
        })?;
        Ok(RouterPlugin {
            name: name.into(),
            engine: engine.clone(),
            pre,
            memories,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The linear memories one instance creates: the pool memories each call takes.
    pub fn memories(&self) -> u32 {
        self.memories
    }

    /// Asks the plugin for a plan for `request` over `snapshot` and `health`. The outer error
    /// is the plugin failing; the inner one is the plugin refusing to route.
    pub async fn route(
        &self,
        request: &RouteRequest,
        snapshot: Arc<RoutingSnapshot>,
        health: HealthRegistry,
    ) -> Result<Result<Vec<Attempt>, RouteRefusal>, PluginError> {
        let _slot = self.engine.slot(self.memories).await?;
        let capabilities = Capabilities {
            routing: Some(snapshot),
            health: Some(health),
            ..Capabilities::default()
        };
        let mut store = new_store(
            &self.engine,
            self.name.clone(),
            request.request_id.clone(),
            capabilities,
        );
        let outcome = match self.pre.instantiate_async(&mut store).await {
            Ok(router) => {
                router
                    .call_route(&mut store, &request_to_wit(request))
                    .await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Ok(plan)) => Ok(Ok(plan
                .attempts
                .into_iter()
                .map(attempt_from_wit)
                .collect())),
            Ok(Err(refusal)) => Ok(Err(refusal_from_wit(refusal))),
            Err(error) => Err(call_failure(&self.name, &store, &error, &self.engine)),
        }
    }
}

fn router_linker(engine: &PluginEngine, name: &str) -> Result<Linker<PluginState>, PluginError> {
    let link_error = |error: wasmtime::Error| {
        PluginError::new(
            name,
            super::PluginErrorKind::Engine(format!("cannot link: {error:#}")),
        )
    };
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
    Router::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |state| state)
        .map_err(link_error)?;
    Ok(linker)
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
