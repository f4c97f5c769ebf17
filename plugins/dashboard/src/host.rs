//! [`Store`] over the host's imports: what the `dashboard` component (`plugins/dashboard-component`)
//! and the broken test dashboards run the handlers on. No policy lives here; it is all in
//! [`crate::router`] and the resource modules.

use monoize_plugin::dashboard::{
    HttpRequest, HttpResponse, billing_store, crypto, dashboard_store, legacy_store,
    registry_store, routing_admin,
};
use monoize_plugin::log;

use crate::store::{
    Adjustment, ApiKey, ApiKeySettings, LedgerEntry, LegacyTable, ModelMetadata, NewUser,
    ProviderInput, ProviderView, RegistryFields, RegistryRecord, Session, Store, StoreResult, User,
    UserPatch,
};

/// The default dashboard's answer to `request`, over the host's imports.
pub fn handle(request: &HttpRequest) -> HttpResponse {
    crate::router::handle(&Host, request)
}

/// The host, through the component's imports.
pub struct Host;

impl Store for Host {
    fn now_ms(&self) -> i64 {
        crate::clock::system_now_ms()
    }

    fn warn(&self, message: &str) {
        log::warn(message);
    }

    fn info(&self, message: &str) {
        log::info(message);
    }

    fn hash_password(&self, password: &str) -> String {
        crypto::hash_password(password)
    }

    fn verify_password(&self, password: &str, hash: &str) -> bool {
        crypto::verify_password(password, hash)
    }

    fn random_token(&self, bytes: u32) -> String {
        crypto::random_token(bytes)
    }

    fn hash_secret(&self, secret: &str) -> String {
        crypto::hash_secret(secret)
    }

    fn count_users(&self) -> StoreResult<u64> {
        dashboard_store::count_users()
    }

    fn list_users(&self) -> StoreResult<Vec<User>> {
        dashboard_store::list_users()
    }

    fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        dashboard_store::get_user(id)
    }

    fn credentials(&self, username: &str) -> StoreResult<Option<(User, String)>> {
        dashboard_store::credentials(username)
    }

    fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        dashboard_store::create_user(user)
    }

    fn update_user(&self, id: &str, patch: &UserPatch) -> StoreResult<User> {
        dashboard_store::update_user(id, patch)
    }

    fn touch_login(&self, id: &str) -> StoreResult<()> {
        dashboard_store::touch_login(id)
    }

    fn delete_user(&self, id: &str) -> StoreResult<()> {
        dashboard_store::delete_user(id)
    }

    fn create_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> StoreResult<Session> {
        dashboard_store::create_session(user_id, token_hash, expires_at)
    }

    fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        dashboard_store::delete_session(token_hash)
    }

    fn list_api_keys(&self, user_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        dashboard_store::list_api_keys(user_id)
    }

    fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        dashboard_store::get_api_key(id)
    }

    fn create_api_key(
        &self,
        user_id: &str,
        key_prefix: &str,
        key_hash: &str,
        settings: &ApiKeySettings,
    ) -> StoreResult<ApiKey> {
        dashboard_store::create_api_key(user_id, key_prefix, key_hash, settings)
    }

    fn update_api_key(&self, id: &str, settings: &ApiKeySettings) -> StoreResult<ApiKey> {
        dashboard_store::update_api_key(id, settings)
    }

    fn delete_api_keys(&self, user_id: &str, ids: &[String]) -> StoreResult<u32> {
        dashboard_store::delete_api_keys(user_id, ids)
    }

    fn adjust(
        &self,
        user_id: &str,
        adjustment: Adjustment,
        meta_json: &str,
    ) -> StoreResult<LedgerEntry> {
        billing_store::adjust(user_id, adjustment, meta_json)
    }

    fn list_ledger(
        &self,
        user_id: Option<&str>,
        limit: u32,
        before: Option<&str>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        billing_store::list_ledger(user_id, limit, before)
    }

    fn list_providers(&self) -> StoreResult<Vec<ProviderView>> {
        routing_admin::list_providers()
    }

    fn get_provider(&self, id: &str) -> StoreResult<Option<ProviderView>> {
        routing_admin::get_provider(id)
    }

    fn create_provider(&self, provider: &ProviderInput) -> StoreResult<ProviderView> {
        routing_admin::create_provider(provider)
    }

    fn update_provider(&self, id: &str, provider: &ProviderInput) -> StoreResult<ProviderView> {
        routing_admin::update_provider(id, provider)
    }

    fn delete_provider(&self, id: &str) -> StoreResult<bool> {
        routing_admin::delete_provider(id)
    }

    fn reorder_providers(&self, provider_ids: &[String]) -> StoreResult<()> {
        routing_admin::reorder_providers(provider_ids)
    }

    fn list_records(&self) -> StoreResult<Vec<RegistryRecord>> {
        registry_store::list_records()
    }

    fn get_record(&self, id: &str) -> StoreResult<Option<RegistryRecord>> {
        registry_store::get_record(id)
    }

    fn create_record(&self, fields: &RegistryFields) -> StoreResult<RegistryRecord> {
        registry_store::create_record(fields)
    }

    fn update_record(&self, id: &str, fields: &RegistryFields) -> StoreResult<RegistryRecord> {
        registry_store::update_record(id, fields)
    }

    fn delete_record(&self, id: &str) -> StoreResult<bool> {
        registry_store::delete_record(id)
    }

    fn list_metadata(&self) -> StoreResult<Vec<ModelMetadata>> {
        registry_store::list_metadata()
    }

    fn get_metadata(&self, model_id: &str) -> StoreResult<Option<ModelMetadata>> {
        registry_store::get_metadata(model_id)
    }

    fn upsert_metadata(&self, metadata: &ModelMetadata) -> StoreResult<ModelMetadata> {
        registry_store::upsert_metadata(metadata)
    }

    fn delete_metadata(&self, model_id: &str) -> StoreResult<bool> {
        registry_store::delete_metadata(model_id)
    }

    fn list_legacy(&self, table: LegacyTable) -> StoreResult<Vec<String>> {
        legacy_store::list_rows(table)
    }

    fn delete_legacy(&self, table: LegacyTable, id: &str) -> StoreResult<bool> {
        legacy_store::delete_row(table, id)
    }
}
