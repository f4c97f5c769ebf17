//! The billing world: load a billing component and ask it whether a request may go upstream
//! (`authorize`) and what a served one costs (`settle`, which records the charge through
//! `billing-store`). Host code calls this through [`crate::billing::Billing`].

use wasmtime::component::HasSelf;

use super::engine::PluginEngine;
use super::instances::{Instance, InstanceCounts, Instances, KEEP_IDLE, world};
use super::load::load_world;
use super::routing_store::endpoint_to_wit;
use super::store::{Capabilities, PluginState};
use super::wit::latest::{BILLING_IMPORTS, Billing as BillingWorld, BillingPre, types};
use super::{PluginError, PluginErrorKind};
use crate::billing::{
    AuthorizeRefusal, AuthorizeRequest, BillingStore, SettleFault, SettleRequest, Settlement, Usage,
};
use crate::money::NanoUsd;
use crate::routing::Attempt;

/// A loaded billing plugin and its instances.
#[derive(Clone)]
pub struct BillingPlugin {
    instances: Instances<BillingWorld>,
}

world!(BillingWorld, BillingPre);

impl BillingPlugin {
    /// Loads the component `bytes` as billing plugin `name`.
    pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let loaded = load_world(
            engine,
            name,
            bytes,
            "billing",
            BILLING_IMPORTS,
            |linker| BillingWorld::add_to_linker::<_, HasSelf<PluginState>>(linker, |state| state),
            BillingPre::new,
        )?;
        Ok(BillingPlugin {
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

    /// Asks the plugin whether `request` may go upstream, with `store` as its billing store.
    /// The outer error is the plugin failing; the inner one is the plugin refusing.
    pub async fn authorize(
        &self,
        request: &AuthorizeRequest,
        store: &BillingStore,
    ) -> Result<Result<(), AuthorizeRefusal>, PluginError> {
        let mut instance = self.take(&request.request_id, store).await?;
        let outcome = instance
            .bindings
            .call_authorize(&mut instance.store, &authorize_to_wit(request))
            .await;
        Ok(self
            .instances
            .finish(instance, outcome)?
            .map_err(refusal_from_wit))
    }

    /// Asks the plugin to compute and record the charge of the served `request`, with `store`
    /// as its billing store. The outer error is the plugin failing (or answering a negative
    /// amount); the inner one is a fault the plugin reports.
    pub async fn settle(
        &self,
        request: &SettleRequest,
        store: &BillingStore,
    ) -> Result<Result<Settlement, SettleFault>, PluginError> {
        let mut instance = self.take(&request.request_id, store).await?;
        let outcome = instance
            .bindings
            .call_settle(&mut instance.store, &settle_to_wit(request))
            .await;
        match self.instances.finish(instance, outcome)? {
            Ok(settlement) => settlement_from_wit(settlement).map(Ok).map_err(|message| {
                PluginError::new(self.name(), PluginErrorKind::ContractViolation(message))
            }),
            Err(fault) => Ok(Err(fault_from_wit(fault))),
        }
    }

    /// An instance for a call of `request_id` over `store`.
    async fn take(
        &self,
        request_id: &str,
        store: &BillingStore,
    ) -> Result<Instance<BillingWorld>, PluginError> {
        let capabilities = Capabilities {
            billing: Some(store.clone()),
            ..Capabilities::default()
        };
        self.instances
            .take(request_id.to_owned(), capabilities)
            .await
    }
}

fn authorize_to_wit(request: &AuthorizeRequest) -> types::AuthorizeRequest {
    types::AuthorizeRequest {
        request_id: request.request_id.clone(),
        user_id: request.user_id.clone(),
        model: request.model.clone(),
        endpoint: endpoint_to_wit(request.endpoint),
    }
}

fn settle_to_wit(request: &SettleRequest) -> types::SettleRequest {
    types::SettleRequest {
        request_id: request.request_id.clone(),
        user_id: request.user_id.clone(),
        model: request.model.clone(),
        endpoint: endpoint_to_wit(request.endpoint),
        attempt: attempt_to_wit(&request.attempt),
        usage: usage_to_wit(request.usage),
    }
}

fn attempt_to_wit(attempt: &Attempt) -> types::Attempt {
    types::Attempt {
        provider_id: attempt.provider_id.clone(),
        channel_id: attempt.channel_id.clone(),
        upstream_model: attempt.upstream_model.clone(),
        multiplier: attempt.multiplier.nanos(),
    }
}

fn usage_to_wit(usage: Usage) -> types::Usage {
    types::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_prompt_tokens: usage.cached_prompt_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        estimated: usage.estimated,
    }
}

/// The plugin's settlement, refused if it reports a negative amount.
fn settlement_from_wit(settlement: types::Settlement) -> Result<Settlement, String> {
    if settlement.cost < 0 || settlement.charged < 0 {
        return Err(format!(
            "settle answered a negative amount (cost {}, charged {})",
            settlement.cost, settlement.charged
        ));
    }
    Ok(Settlement {
        cost: NanoUsd(settlement.cost),
        charged: NanoUsd(settlement.charged),
        priced: settlement.priced,
    })
}

fn refusal_from_wit(refusal: types::AuthorizeError) -> AuthorizeRefusal {
    match refusal {
        types::AuthorizeError::InsufficientBalance(message) => {
            AuthorizeRefusal::InsufficientBalance(message)
        }
        types::AuthorizeError::Denied(message) => AuthorizeRefusal::Denied(message),
    }
}

fn fault_from_wit(fault: types::SettleError) -> SettleFault {
    match fault {
        types::SettleError::Overflow(message) => SettleFault::Overflow(message),
        types::SettleError::UnknownAccount(message) => SettleFault::UnknownAccount(message),
        types::SettleError::Storage(message) => SettleFault::Storage(message),
    }
}
