//! Billing, as the host sees it (DESIGN §6): the request and answer types of the two billing
//! phases, the billing store that plugins reach through `monoize:plugin/billing-store`, the
//! group-commit writer every balance change goes through, and [`Billing`], the service the
//! gateway calls — `authorize` before a request goes upstream, `settle` after it was served.
//! The billing *policy* (who may spend, what a request costs) is not here: it is the billing
//! plugin's.

pub mod cache;
pub mod commit;
pub mod store;

pub use commit::{CommitStats, LedgerWrite, LedgerWriter};
pub use store::{BillingStore, RequestKey};

use crate::db::stored_responses::StoredResponse;
use crate::money::NanoUsd;
use crate::plugins::{BillingPlugin, PluginError};
use crate::routing::{Attempt, EndpointKind};

/// Token counts of one served request, read from the upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning ones included.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those read from the provider's prompt cache, when reported.
    pub cached_prompt_tokens: Option<u64>,
    /// Of `completion_tokens`, those spent on reasoning, when reported.
    pub reasoning_tokens: Option<u64>,
    /// The upstream never reported usage (a stream cut short) and the host estimated it.
    pub estimated: bool,
}

/// What the host asks before a request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The request's id.
    pub request_id: String,
    /// The user who owns the API key.
    pub user_id: String,
    /// The logical model asked for.
    pub model: String,
    /// The endpoint the request arrived on.
    pub endpoint: EndpointKind,
}

/// What the host asks after an upstream served a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    /// The request's id: a settle is idempotent by it.
    pub request_id: String,
    /// The user who owns the API key.
    pub user_id: String,
    /// The logical model asked for.
    pub model: String,
    /// The endpoint the request arrived on (embeddings bill prompt tokens only).
    pub endpoint: EndpointKind,
    /// The attempt that served the request.
    pub attempt: Attempt,
    /// The usage to bill.
    pub usage: Usage,
}

/// The result of a settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The computed cost (zero when the model has no pricing).
    pub cost: NanoUsd,
    /// What was taken from the balance (zero for an unlimited account).
    pub charged: NanoUsd,
    /// False when the model had no pricing and nothing was charged.
    pub priced: bool,
}

/// Why a billing plugin refused to let a request go upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeRefusal {
    /// A limited account at or below zero (HTTP 402).
    #[error("insufficient balance: {0}")]
    InsufficientBalance(String),
    /// Anything else (HTTP 403).
    #[error("denied: {0}")]
    Denied(String),
}

/// Why a settle did not charge. A served request is never refused; these are faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleFault {
    /// The arithmetic would overflow a nano-USD amount.
    #[error("overflow: {0}")]
    Overflow(String),
    /// The account does not exist.
    #[error("unknown account: {0}")]
    UnknownAccount(String),
    /// The charge could not be recorded.
    #[error("storage: {0}")]
    Storage(String),
}

/// Why a billing phase did not succeed: the error type of the billing layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingFailure {
    /// `authorize`: a limited account at or below zero (HTTP 402 `insufficient_balance`).
    #[error("insufficient balance: {0}")]
    InsufficientBalance(String),
    /// `authorize`: refused for another reason (HTTP 403).
    #[error("denied: {0}")]
    Denied(String),
    /// `settle`: the charge could not be computed or recorded (the message names why).
    #[error("settle failed: {0}")]
    Fault(String),
    /// The plugin itself failed (trap, timeout, out of memory, broken contract).
    #[error(transparent)]
    Plugin(PluginError),
}

/// A user's billing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `users.id`.
    pub user_id: String,
    /// `users.balance_nano_usd`; negative while the user owes.
    pub balance: NanoUsd,
    /// `users.balance_unlimited`: never debited, never refused for balance.
    pub unlimited: bool,
}

/// A model's prices in nano-USD per token; `None` where unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// The model id the prices belong to.
    pub model_id: String,
    /// Per input token.
    pub input: Option<u64>,
    /// Per output token.
    pub output: Option<u64>,
    /// Per input token read from the prompt cache.
    pub cache_read_input: Option<u64>,
    /// Per reasoning output token.
    pub reasoning_output: Option<u64>,
}

/// The billing phases of the request pipeline: the billing plugin over the billing store.
/// Cheap to clone.
#[derive(Clone)]
pub struct Billing {
    plugin: BillingPlugin,
    store: BillingStore,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Billing")
            .field("plugin", &self.plugin.name())
            .field("store", &self.store)
            .finish()
    }
}

impl Billing {
    /// `plugin` deciding over `store`.
    pub fn new(plugin: BillingPlugin, store: BillingStore) -> Billing {
        Billing { plugin, store }
    }

    /// The billing plugin.
    pub fn plugin(&self) -> &BillingPlugin {
        &self.plugin
    }

    /// The billing store.
    pub fn store(&self) -> &BillingStore {
        &self.store
    }

    /// Whether `request` may go upstream.
    pub async fn authorize(&self, request: &AuthorizeRequest) -> Result<(), BillingFailure> {
        match self.plugin.authorize(request, &self.store).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(AuthorizeRefusal::InsufficientBalance(message))) => {
                Err(BillingFailure::InsufficientBalance(message))
            }
            Ok(Err(AuthorizeRefusal::Denied(message))) => Err(BillingFailure::Denied(message)),
            Err(error) => Err(BillingFailure::Plugin(error)),
        }
    }

    /// Computes and records the charge of a served request, and answers once it is committed.
    ///
    /// The settle runs on a task of its own: if the caller stops waiting (the client went
    /// away while its last bytes were held back), the charge still completes — a served
    /// request is always billed.
    pub async fn settle(&self, request: SettleRequest) -> Result<Settlement, BillingFailure> {
        self.settle_with(request, self.store.clone()).await
    }

    /// [`Billing::settle`] of a request made with `key` that may have stored a response
    /// upstream: its charge records the key (and, when the key's quota is limited, is taken
    /// from that quota too) and the stored response's owner, in the same transaction.
    pub async fn settle_for_request(
        &self,
        request: SettleRequest,
        key: RequestKey,
        stored_response: Option<StoredResponse>,
    ) -> Result<Settlement, BillingFailure> {
        let store = self
            .store
            .for_request(&request.request_id, key, stored_response);
        self.settle_with(request, store).await
    }

    async fn settle_with(
        &self,
        request: SettleRequest,
        store: BillingStore,
    ) -> Result<Settlement, BillingFailure> {
        let plugin = self.plugin.clone();
        let task = tokio::spawn(async move { plugin.settle(&request, &store).await });
        match task.await {
            Ok(Ok(Ok(settlement))) => Ok(settlement),
            Ok(Ok(Err(fault))) => Err(BillingFailure::Fault(fault.to_string())),
            Ok(Err(error)) => Err(BillingFailure::Plugin(error)),
            Err(error) => Err(BillingFailure::Fault(format!(
                "the settle task failed: {error}"
            ))),
        }
    }
}
