//! `monoize:plugin/routing-admin`: provider, model and channel writes over the database.
//! Channel API keys are write-only: no read answers one, and a channel written without a key
//! keeps its stored key. Every write replaces the routing snapshot ([`RoutingWrites`]), so the
//! gateway routes by the new configuration from the next request on.

use std::sync::Arc;

use crate::db::routing::{
    self as db_routing, ChannelInput, ChannelRow, ModelInput, ProviderDetail, ProviderInput,
    ProviderModelRow, ProviderType,
};
use crate::db::{Database, DbError};
use crate::money::Multiplier;
use crate::routing::{RoutingSnapshot, SharedSnapshot};

use super::billing_store::store_error;
use super::registry_store::found;
use super::store::PluginState;
use super::wit::latest::routing_admin::{self as wit, Host};
use super::wit::latest::routing_store;
use super::wit::latest::types::{self, StoreError};

/// The routing snapshot in force and what keeps its replacements in order. Reloads are
/// serialised, and each reads the tables after taking its turn, so the last snapshot put in
/// force always includes the last committed write. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoutingWrites {
    snapshot: SharedSnapshot,
    reload: Arc<tokio::sync::Mutex<()>>,
}

impl RoutingWrites {
    /// Replacements of `snapshot`.
    pub fn new(snapshot: SharedSnapshot) -> Self {
        RoutingWrites {
            snapshot,
            reload: Arc::default(),
        }
    }

    /// The snapshot being replaced.
    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// Re-reads the routing tables of `database` and puts the new snapshot in force.
    pub async fn reload(&self, database: &Database) -> Result<(), DbError> {
        let _turn = self.reload.lock().await;
        let rows = database.read(db_routing::load_routing_rows).await?;
        self.snapshot.replace(RoutingSnapshot::from_rows(rows));
        Ok(())
    }
}

impl Host for PluginState {
    async fn list_providers(&mut self) -> Result<Vec<wit::ProviderView>, StoreError> {
        let details = self.dashboard_read(db_routing::list_providers).await?;
        Ok(details.into_iter().map(view_of).collect())
    }

    async fn get_provider(&mut self, id: String) -> Result<Option<wit::ProviderView>, StoreError> {
        let detail = self
            .dashboard_read(move |conn| db_routing::get_provider(conn, &id))
            .await?;
        Ok(detail.map(view_of))
    }

    async fn create_provider(
        &mut self,
        provider: wit::ProviderInput,
    ) -> Result<wit::ProviderView, StoreError> {
        let input = input_from_wit(provider);
        let detail = self
            .routing_write(move |tx| db_routing::create_provider(tx, &input))
            .await?;
        Ok(view_of(detail))
    }

    async fn update_provider(
        &mut self,
        id: String,
        provider: wit::ProviderInput,
    ) -> Result<wit::ProviderView, StoreError> {
        let input = input_from_wit(provider);
        let detail = self
            .routing_write(move |tx| db_routing::replace_provider(tx, &id, &input))
            .await?;
        Ok(view_of(detail))
    }

    async fn delete_provider(&mut self, id: String) -> Result<bool, StoreError> {
        self.routing_write(move |tx| found(db_routing::delete_provider(tx, &id)))
            .await
    }

    async fn reorder_providers(&mut self, provider_ids: Vec<String>) -> Result<(), StoreError> {
        self.routing_write(move |tx| db_routing::reorder_providers(tx, &provider_ids))
            .await
    }
}

impl PluginState {
    /// Runs `write` in one transaction and, once it committed, replaces the routing snapshot;
    /// both waits are credited to the time bound.
    async fn routing_write<T, F>(&mut self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let database = self.database()?;
        let writes = self.capabilities.routing_writes.clone().ok_or_else(|| {
            StoreError::Storage("no routing snapshot is available to this call".to_owned())
        })?;
        let written = self
            .host_wait(database.write(write))
            .await
            .map_err(store_error)?;
        if let Err(error) = self.host_wait(writes.reload(&database)).await {
            // The write is committed; the next successful reload will carry it.
            tracing::error!(%error, "routing snapshot reload after a dashboard write failed");
            return Err(StoreError::Storage(format!(
                "the write is saved but the routing snapshot could not be reloaded: {error}"
            )));
        }
        Ok(written)
    }
}

fn input_from_wit(provider: wit::ProviderInput) -> ProviderInput {
    let models = provider
        .models
        .into_iter()
        .map(|model| ModelInput {
            model_name: model.model,
            redirect: model.redirect,
            multiplier: Multiplier::from_nanos(model.multiplier),
        })
        .collect();
    // A new channel without a key is refused by the database layer, naming the channel.
    let channels = provider
        .channels
        .into_iter()
        .map(|channel| ChannelInput {
            id: channel.id,
            name: channel.name,
            base_url: channel.base_url,
            api_key: channel.api_key,
            weight: channel.weight,
            enabled: channel.enabled,
        })
        .collect();
    ProviderInput {
        name: provider.name,
        provider_type: provider_type_from_wit(provider.provider_type),
        max_retries: provider.max_retries,
        transforms_json: provider.transforms_json,
        groups: provider.groups,
        enabled: provider.enabled,
        priority: provider.priority,
        models,
        channels,
    }
}

/// A provider as an administrator reads it: channel URLs, never channel keys.
fn view_of(detail: ProviderDetail) -> wit::ProviderView {
    let ProviderDetail {
        provider,
        models,
        channels,
    } = detail;
    wit::ProviderView {
        provider: routing_store::Provider {
            id: provider.id,
            name: provider.name,
            provider_type: provider_type_to_wit(provider.provider_type),
            enabled: provider.enabled,
            priority: provider.priority,
            max_retries: provider.max_retries,
            groups: provider.groups,
            models: models.into_iter().map(model_to_wit).collect(),
            channels: channels.iter().map(channel_to_wit).collect(),
        },
        channels: channels.into_iter().map(channel_view).collect(),
        transforms_json: provider.transforms_json,
        created_at: provider.created_at,
        updated_at: provider.updated_at,
    }
}

fn model_to_wit(row: ProviderModelRow) -> routing_store::ModelEntry {
    routing_store::ModelEntry {
        model: row.model_name,
        redirect: row.redirect,
        multiplier: row.multiplier.nanos(),
    }
}

fn channel_to_wit(row: &ChannelRow) -> routing_store::Channel {
    routing_store::Channel {
        id: row.id.clone(),
        name: row.name.clone(),
        weight: row.weight,
        enabled: row.enabled,
    }
}

/// The channel without its key: the key is dropped here, with the row.
fn channel_view(row: ChannelRow) -> wit::ChannelView {
    wit::ChannelView {
        id: row.id,
        name: row.name,
        base_url: row.base_url,
        weight: row.weight,
        enabled: row.enabled,
    }
}

fn provider_type_to_wit(provider_type: ProviderType) -> types::ProviderType {
    match provider_type {
        ProviderType::Responses => types::ProviderType::Responses,
        ProviderType::ChatCompletion => types::ProviderType::ChatCompletion,
        ProviderType::Messages => types::ProviderType::Messages,
        ProviderType::Gemini => types::ProviderType::Gemini,
        ProviderType::Grok => types::ProviderType::Grok,
    }
}

fn provider_type_from_wit(provider_type: types::ProviderType) -> ProviderType {
    match provider_type {
        types::ProviderType::Responses => ProviderType::Responses,
        types::ProviderType::ChatCompletion => ProviderType::ChatCompletion,
        types::ProviderType::Messages => ProviderType::Messages,
        types::ProviderType::Gemini => ProviderType::Gemini,
        types::ProviderType::Grok => ProviderType::Grok,
    }
}
