//! The dashboard world: load a dashboard component and hand it one `/api/dashboard/*` request
//! at a time. The host resolves the session into a [`Caller`] first; the plugin decides who
//! may do what and answers status, headers and a JSON body. Host code calls this through
//! `crate::dashboard`, which owns the HTTP side.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::dashboard_store::role_to_wit;
use super::engine::{PluginEngine, memories_of};
use super::load::load_component;
use super::routing_admin::RoutingWrites;
use super::store::{Capabilities, PluginState, new_store};
use super::wit::latest::{self as wit, DASHBOARD_IMPORTS, Dashboard, DashboardPre};
use super::{PluginError, PluginErrorKind, call_failure};
use crate::billing::BillingStore;
use crate::db::Database;
use crate::db::users::Role;
use crate::gateway::auth::Authenticator;

/// The logged-in user a request comes from, resolved by the host from the session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Their user id.
    pub user_id: String,
    /// Their username.
    pub username: String,
    /// Their role.
    pub role: Role,
    /// The session's id.
    pub session_id: String,
}

/// One dashboard request as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path after `/api/dashboard`, beginning with `/`.
    pub path: String,
    /// The query string without `?`.
    pub query: String,
    /// The JSON body, within the host's limit.
    pub body: Vec<u8>,
    /// The logged-in caller, if the session is valid.
    pub caller: Option<Caller>,
    /// The session token as sent, valid or not (for logout).
    pub session_token: Option<String>,
}

/// The plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardResponse {
    /// HTTP status (100–999; the HTTP layer checks it further).
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// What a dashboard call may reach: the database, the billing store (for `adjust` and the
/// ledger), the routing snapshot to replace, and the gateway's key cache to empty.
#[derive(Debug, Clone)]
pub struct DashboardServices {
    /// The database.
    pub database: Database,
    /// Balances and the ledger.
    pub billing: BillingStore,
    /// The routing snapshot that routing writes replace.
    pub routing_writes: RoutingWrites,
    /// The gateway's verified-key cache.
    pub authenticator: Authenticator,
}

/// A loaded dashboard plugin, ready to instantiate per call.
#[derive(Clone)]
pub struct DashboardPlugin {
    name: Arc<str>,
    engine: PluginEngine,
    pre: DashboardPre<PluginState>,
    /// The linear memories one instance creates (its share of the pool).
    memories: u32,
}

impl DashboardPlugin {
    /// Loads the component `bytes` as dashboard plugin `name`.
    pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let linker = dashboard_linker(engine, name)?;
        let instance_pre = load_component(engine, &linker, name, bytes, DASHBOARD_IMPORTS)?;
        let memories = memories_of(instance_pre.component());
        let pre = DashboardPre::new(instance_pre).map_err(|error| {
            PluginError::new(
                name,
                PluginErrorKind::Load(format!("does not export the dashboard world: {error:#}")),
            )
        })?;
        Ok(DashboardPlugin {
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

    /// Asks the plugin to answer `request` (logged as `request_id`) over `services`.
    pub async fn handle(
        &self,
        request_id: &str,
        request: DashboardRequest,
        services: &DashboardServices,
    ) -> Result<DashboardResponse, PluginError> {
        let _slot = self.engine.slot(self.memories).await?;
        let capabilities = Capabilities {
            billing: Some(services.billing.clone()),
            database: Some(services.database.clone()),
            routing_writes: Some(services.routing_writes.clone()),
            authenticator: Some(services.authenticator.clone()),
            caller_role: request.caller.as_ref().map(|caller| caller.role),
            ..Capabilities::default()
        };
        let mut store = new_store(
            &self.engine,
            self.name.clone(),
            request_id.to_owned(),
            capabilities,
        );
        let outcome = match self.pre.instantiate_async(&mut store).await {
            Ok(dashboard) => {
                dashboard
                    .call_handle(&mut store, &request_to_wit(request))
                    .await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(response) => Ok(DashboardResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(call_failure(&self.name, &store, &error, &self.engine)),
        }
    }
}

fn dashboard_linker(engine: &PluginEngine, name: &str) -> Result<Linker<PluginState>, PluginError> {
    let link_error = |error: wasmtime::Error| {
        PluginError::new(
            name,
            PluginErrorKind::Engine(format!("cannot link: {error:#}")),
        )
    };
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
    Dashboard::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |state| state)
        .map_err(link_error)?;
    Ok(linker)
}

fn request_to_wit(request: DashboardRequest) -> wit::HttpRequest {
    wit::HttpRequest {
        method: request.method,
        path: request.path,
        query: request.query,
        body: request.body,
        caller: request.caller.map(|caller| wit::Caller {
            user_id: caller.user_id,
            username: caller.username,
            role: role_to_wit(caller.role),
            session_id: caller.session_id,
        }),
        session_token: request.session_token,
    }
}
