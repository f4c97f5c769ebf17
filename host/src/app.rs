//! The state every request handler reaches, and how it is built at startup: the database, the
//! configuration, the plugin engine, the router with the routing snapshot and channel health,
//! billing, and the dashboard plugin with what it may reach.

use std::fmt;
use std::time::Duration;

use crate::billing::{Billing, BillingStore};
use crate::config::Config;
use crate::dashboard::Dashboard;
use crate::db::{Database, DbError, routing};
use crate::gateway::Gateway;
use crate::gateway::forward::UpstreamClientError;
use crate::gateway::route::RoutePhase;
use crate::metrics::{ChannelReport, ChannelSource, Metrics};
use crate::plugins::dashboard::DashboardServices;
use crate::plugins::instances::InstanceCounts;
use crate::plugins::routing_admin::RoutingWrites;
use crate::plugins::{
    self, BillingPlugin, DashboardPlugin, EngineSettings, PluginEngine, PluginError, PluginLimits,
    RouterPlugin,
};
use crate::routing::{HealthPolicy, HealthRegistry, RoutingSnapshot, SharedSnapshot};

/// What every handler can reach, behind an `Arc`.
pub struct AppState {
    /// The database.
    pub db: Database,
    /// The configuration the server started with.
    pub config: Config,
    /// The plugin engine all plugins run on.
    pub engine: PluginEngine,
    /// The routing snapshot in force; routing writes replace it.
    pub snapshot: SharedSnapshot,
    /// Passive channel health.
    pub health: HealthRegistry,
    /// The route phase: the router plugin over the snapshot and health.
    pub routing: RoutePhase,
    /// The gateway's key cache and upstream client.
    pub gateway: Gateway,
    /// The billing phases: the billing plugin over the billing store.
    pub billing: Billing,
    /// What `GET /metrics` reports.
    pub metrics: Metrics,
    /// Replacements of the routing snapshot, kept in order.
    pub routing_writes: RoutingWrites,
    /// The dashboard plugin with what its calls may reach.
    pub dashboard: Dashboard,
}

impl fmt::Debug for AppState {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.debug_struct("AppState")
            .field("db", &self.db)
            .field("config", &self.config)
            .field("router", &self.routing.plugin().name())
            .field("billing", &self.billing.plugin().name())
            .field("dashboard", &self.dashboard.plugin().name())
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A plugin (or the plugin engine) could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamClientError),
}

impl AppState {
    /// Builds the state over `db` as `config` says: starts the plugin engine with the
    /// configured limits and cache, loads the router (the file named by
    /// `MONOIZE_ROUTING_PLUGIN`, else the built-in one), the billing and dashboard plugins the
    /// same way, and reads the routing snapshot.
    pub async fn start(db: Database, config: Config) -> Result<AppState, StartupError> {
        let engine = PluginEngine::new(&engine_settings(&config))?;
        let router = plugins::load_router(&engine, config.routing_plugin.as_deref())?;
        let rows = db.read(routing::load_routing_rows).await?;
        let snapshot = SharedSnapshot::new(RoutingSnapshot::from_rows(rows));
        let health = HealthRegistry::new(health_policy(&config));
        let routing = RoutePhase::new(router, snapshot.clone(), health.clone());
        let gateway = Gateway::new(&config)?;
        let billing = Billing::new(
            plugins::load_billing(&engine, config.billing_plugin.as_deref())?,
            BillingStore::new(db.clone())?,
        );
        let routing_writes = RoutingWrites::new(snapshot.clone());
        let dashboard = Dashboard::new(
            plugins::load_dashboard(&engine, config.dashboard_plugin.as_deref())?,
            DashboardServices {
                database: db.clone(),
                billing: billing.store().clone(),
                routing_writes: routing_writes.clone(),
                authenticator: gateway.auth.clone(),
            },
        );
        let metrics = Metrics::new();
        let router = routing.plugin();
        watch(
            &metrics,
            router.name(),
            router.clone(),
            RouterPlugin::instance_counts,
        );
        let biller = billing.plugin();
        watch(
            &metrics,
            biller.name(),
            biller.clone(),
            BillingPlugin::instance_counts,
        );
        let board = dashboard.plugin();
        watch(
            &metrics,
            board.name(),
            board.clone(),
            DashboardPlugin::instance_counts,
        );
        metrics.watch_channels(channel_reports(snapshot.clone(), health.clone()));
        Ok(AppState {
            db,
            config,
            engine,
            snapshot,
            health,
            routing,
            gateway,
            billing,
            metrics,
            routing_writes,
            dashboard,
        })
    }

    /// Re-reads the routing tables and puts the new snapshot in force.
    pub async fn reload_routing(&self) -> Result<(), DbError> {
        self.routing_writes.reload(&self.db).await
    }
}

/// The health of every channel of the routing snapshot in force, as `/metrics` reports it.
fn channel_reports(snapshot: SharedSnapshot, health: HealthRegistry) -> ChannelSource {
    Box::new(move || {
        let snapshot = snapshot.current();
        let reader = health.reader();
        snapshot
            .providers()
            .iter()
            .flat_map(|provider| {
                provider.channels.iter().map(|channel| {
                    let status = reader.get(&channel.id);
                    ChannelReport {
                        provider: provider.name.clone(),
                        channel: channel.name.clone(),
                        healthy: status.healthy,
                        consecutive_failures: status.consecutive_failures,
                    }
                })
            })
            .collect()
    })
}

/// The channel health policy `config` asks for.
pub fn health_policy(config: &Config) -> HealthPolicy {
    HealthPolicy {
        failure_threshold: u32::try_from(config.health_failure_threshold).unwrap_or(u32::MAX),
        cooldown: Duration::from_millis(config.health_cooldown_ms),
    }
}

/// The engine settings `config` asks for: its time bound, memory cap and cache directory.
pub fn engine_settings(config: &Config) -> EngineSettings {
    let memory_bytes =
        usize::try_from(config.plugin_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    EngineSettings {
        limits: PluginLimits {
            timeout: Duration::from_millis(config.plugin_timeout_ms),
            memory_bytes,
            ..PluginLimits::default()
        },
        cache_dir: config.plugin_cache_dir.resolve(&config.dsn),
    }
}

/// Has `metrics` report the instances of `plugin` (named `name`), read through `counts`.
fn watch<P: Send + Sync + 'static>(
    metrics: &Metrics,
    name: &str,
    plugin: P,
    counts: fn(&P) -> InstanceCounts,
) {
    metrics.watch_instances(name, Box::new(move || counts(&plugin)));
}
