//! Everything the handlers reach outside the plugin, behind one trait: the host's store
//! interfaces, `crypto`, the clock and the log. The component implements it with the host's
//! imports (`component.rs`); the unit tests with an in-memory fake. The records are the
//! generated WIT types, re-exported here so the handlers name them from one place.

pub use monoize_plugin::dashboard::billing_store::{Adjustment, LedgerEntry, LedgerKind};
pub use monoize_plugin::dashboard::dashboard_store::{
    ApiKey, ApiKeySettings, NewUser, Session, User, UserPatch,
};
pub use monoize_plugin::dashboard::legacy_store::LegacyTable;
pub use monoize_plugin::dashboard::registry_store::{
    ModelMetadata, RegistryFields, RegistryRecord,
};
pub use monoize_plugin::dashboard::routing_admin::{
    ChannelInput, ChannelView, ModelInput, ProviderInput, ProviderView,
};
pub use monoize_plugin::dashboard::routing_store::{Channel, ModelEntry, Provider};
pub use monoize_plugin::dashboard::{
    Caller, HttpRequest, HttpResponse, ProviderType, Role, StoreError,
};

/// The answer of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The host, as the handlers see it. One method per imported function, same names and meaning
/// as in the WIT (`wit/since_v0.1.0/`), plus the clock.
pub trait Store {
    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> i64;
    /// Writes a warning to the host's log.
    fn warn(&self, message: &str);
    /// Writes a line about a normal event (an administrator's change) to the host's log.
    fn info(&self, message: &str);

    /// `crypto.hash-password`.
    fn hash_password(&self, password: &str) -> String;
    /// `crypto.verify-password`.
    fn verify_password(&self, password: &str, hash: &str) -> bool;
    /// `crypto.random-token`.
    fn random_token(&self, bytes: u32) -> String;
    /// `crypto.hash-secret`.
    fn hash_secret(&self, secret: &str) -> String;

    /// `dashboard-store.count-users`.
    fn count_users(&self) -> StoreResult<u64>;
    /// `dashboard-store.list-users`.
    fn list_users(&self) -> StoreResult<Vec<User>>;
    /// `dashboard-store.get-user`.
    fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// `dashboard-store.credentials`.
    fn credentials(&self, username: &str) -> StoreResult<Option<(User, String)>>;
    /// `dashboard-store.create-user`.
    fn create_user(&self, user: &NewUser) -> StoreResult<User>;
    /// `dashboard-store.update-user`.
    fn update_user(&self, id: &str, patch: &UserPatch) -> StoreResult<User>;
    /// `dashboard-store.touch-login`.
    fn touch_login(&self, id: &str) -> StoreResult<()>;
    /// `dashboard-store.delete-user`.
    fn delete_user(&self, id: &str) -> StoreResult<()>;
    /// `dashboard-store.create-session`.
    fn create_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> StoreResult<Session>;
    /// `dashboard-store.delete-session`.
    fn delete_session(&self, token_hash: &str) -> StoreResult<bool>;
    /// `dashboard-store.list-api-keys`.
    fn list_api_keys(&self, user_id: Option<&str>) -> StoreResult<Vec<ApiKey>>;
    /// `dashboard-store.get-api-key`.
    fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// `dashboard-store.create-api-key`.
    fn create_api_key(
        &self,
        user_id: &str,
        key_prefix: &str,
        key_hash: &str,
        settings: &ApiKeySettings,
    ) -> StoreResult<ApiKey>;
    /// `dashboard-store.update-api-key`.
    fn update_api_key(&self, id: &str, settings: &ApiKeySettings) -> StoreResult<ApiKey>;
    /// `dashboard-store.delete-api-keys`.
    fn delete_api_keys(&self, user_id: &str, ids: &[String]) -> StoreResult<u32>;

    /// `billing-store.adjust`.
    fn adjust(
        &self,
        user_id: &str,
        adjustment: Adjustment,
        meta_json: &str,
    ) -> StoreResult<LedgerEntry>;
    /// `billing-store.list-ledger`.
    fn list_ledger(
        &self,
        user_id: Option<&str>,
        limit: u32,
        before: Option<&str>,
    ) -> StoreResult<Vec<LedgerEntry>>;

    /// `routing-admin.list-providers`.
    fn list_providers(&self) -> StoreResult<Vec<ProviderView>>;
    /// `routing-admin.get-provider`.
    fn get_provider(&self, id: &str) -> StoreResult<Option<ProviderView>>;
    /// `routing-admin.create-provider`.
    fn create_provider(&self, provider: &ProviderInput) -> StoreResult<ProviderView>;
    /// `routing-admin.update-provider`.
    fn update_provider(&self, id: &str, provider: &ProviderInput) -> StoreResult<ProviderView>;
    /// `routing-admin.delete-provider`.
    fn delete_provider(&self, id: &str) -> StoreResult<bool>;
    /// `routing-admin.reorder-providers`.
    fn reorder_providers(&self, provider_ids: &[String]) -> StoreResult<()>;

    /// `registry-store.list-records`.
    fn list_records(&self) -> StoreResult<Vec<RegistryRecord>>;
    /// `registry-store.get-record`.
    fn get_record(&self, id: &str) -> StoreResult<Option<RegistryRecord>>;
    /// `registry-store.create-record`.
    fn create_record(&self, fields: &RegistryFields) -> StoreResult<RegistryRecord>;
    /// `registry-store.update-record`.
    fn update_record(&self, id: &str, fields: &RegistryFields) -> StoreResult<RegistryRecord>;
    /// `registry-store.delete-record`.
    fn delete_record(&self, id: &str) -> StoreResult<bool>;
    /// `registry-store.list-metadata`.
    fn list_metadata(&self) -> StoreResult<Vec<ModelMetadata>>;
    /// `registry-store.get-metadata`.
    fn get_metadata(&self, model_id: &str) -> StoreResult<Option<ModelMetadata>>;
    /// `registry-store.upsert-metadata`.
    fn upsert_metadata(&self, metadata: &ModelMetadata) -> StoreResult<ModelMetadata>;
    /// `registry-store.delete-metadata`.
    fn delete_metadata(&self, model_id: &str) -> StoreResult<bool>;

    /// `legacy-store.list-rows`.
    fn list_legacy(&self, table: LegacyTable) -> StoreResult<Vec<String>>;
    /// `legacy-store.delete-row`.
    fn delete_legacy(&self, table: LegacyTable, id: &str) -> StoreResult<bool>;
}
