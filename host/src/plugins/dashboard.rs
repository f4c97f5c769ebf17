//! The dashboard world: load a dashboard component and hand it one `/api/dashboard/*` request
//! at a time. The host resolves the session into a [`Caller`] first; the plugin decides who
//! may do what and answers status, headers and a JSON body. Host code calls this through
//! `crate::dashboard`, which owns the HTTP side.

use wasmtime::component::HasSelf;

use super::PluginError;
use super::dashboard_store::role_to_wit;
use super::engine::PluginEngine;
use super::instances::{InstanceCounts, Instances, world};
use super::load::load_world;
use super::routing_admin::RoutingWrites;
use super::store::{Capabilities, PluginState};
use super::wit::latest::{self as wit, DASHBOARD_IMPORTS, Dashboard, DashboardPre};
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

/// A loaded dashboard plugin and its instances: a new one per call. Dashboard calls are off
/// the request path and carry passwords and session tokens, so no instance outlives its call.
#[derive(Clone)]
pub struct DashboardPlugin {
    instances: Instances<Dashboard>,
}

world!(Dashboard, DashboardPre);

impl DashboardPlugin {
    /// Loads the component `bytes` as dashboard plugin `name`.
    pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let loaded = load_world(
            engine,
            name,
            bytes,
            "dashboard",
            DASHBOARD_IMPORTS,
            |linker| Dashboard::add_to_linker::<_, HasSelf<PluginState>>(linker, |state| state),
            DashboardPre::new,
        )?;
        Ok(DashboardPlugin {
            instances: Instances::new(loaded, 0),
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

    /// Asks the plugin to answer `request` (logged as `request_id`) over `services`.
    pub async fn handle(
        &self,
        request_id: &str,
        request: DashboardRequest,
        services: &DashboardServices,
    ) -> Result<DashboardResponse, PluginError> {
        let capabilities = Capabilities {
            billing: Some(services.billing.clone()),
            database: Some(services.database.clone()),
            routing_writes: Some(services.routing_writes.clone()),
            authenticator: Some(services.authenticator.clone()),
            caller_role: request.caller.as_ref().map(|caller| caller.role),
            ..Capabilities::default()
        };
        let mut instance = self
            .instances
            .take(request_id.to_owned(), capabilities)
            .await?;
        let outcome = instance
            .bindings
            .call_handle(&mut instance.store, &request_to_wit(request))
            .await;
        let response = self.instances.finish(instance, outcome)?;
        Ok(DashboardResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
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
