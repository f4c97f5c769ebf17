//! `monoize:plugin/dashboard-store`: users, sessions and API keys over the database. Secrets
//! arrive only as hashes and leave never: no read answers a password hash except
//! `credentials`, which the plugin needs to verify a login, and no read answers a key hash.
//! After every user or key write the gateway's verified-key cache is emptied, so a disabled
//! user or a changed key takes effect on the next request.

use crate::db::api_keys::{self, ApiKeyRow, NewApiKey};
use crate::db::users::{self, NewUser, Role as DbRole, UserRow};
use crate::db::{Database, DbError, clock, sessions};
use crate::money::{Multiplier, NanoUsd};

use super::billing_store::store_error;
use super::store::PluginState;
use super::wit::latest::dashboard_store::{self as wit, Host};
use super::wit::latest::types::{Role, StoreError};

impl Host for PluginState {
    async fn count_users(&mut self) -> Result<u64, StoreError> {
        let count = self.dashboard_read(users::count).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn list_users(&mut self) -> Result<Vec<wit::User>, StoreError> {
        let rows = self.dashboard_read(users::list).await?;
        Ok(rows.into_iter().map(user_to_wit).collect())
    }

    async fn get_user(&mut self, id: String) -> Result<Option<wit::User>, StoreError> {
        let row = self
            .dashboard_read(move |conn| users::get(conn, &id))
            .await?;
        Ok(row.map(user_to_wit))
    }

    async fn credentials(
        &mut self,
        username: String,
    ) -> Result<Option<(wit::User, String)>, StoreError> {
        let row = self
            .dashboard_read(move |conn| users::by_username(conn, &username))
            .await?;
        Ok(row.map(|row| {
            let hash = row.password_hash.clone();
            (user_to_wit(row), hash)
        }))
    }

    async fn create_user(&mut self, user: wit::NewUser) -> Result<wit::User, StoreError> {
        if user.username.trim().is_empty() {
            return Err(StoreError::Invalid("username must not be empty".to_owned()));
        }
        if user.password_hash.is_empty() {
            return Err(StoreError::Invalid(
                "password_hash must not be empty".to_owned(),
            ));
        }
        let new = NewUser {
            username: user.username,
            password_hash: user.password_hash,
            role: role_from_wit(user.role),
            enabled: user.enabled,
            balance_unlimited: user.balance_unlimited,
        };
        // Checked in the insert's own transaction: two first registrations at once cannot both
        // find the table empty, so only one of them becomes `super_admin`.
        let first_only = new.role == DbRole::SuperAdmin
            && self.capabilities.caller_role != Some(DbRole::SuperAdmin);
        let row = self
            .dashboard_write(move |tx| {
                if first_only && users::count(tx)? > 0 {
                    return Err(DbError::Conflict(
                        "only a super_admin, or the first user, can create a super_admin"
                            .to_owned(),
                    ));
                }
                users::insert(tx, &new).map_err(username_conflict)
            })
            .await?;
        Ok(user_to_wit(row))
    }

    async fn update_user(
        &mut self,
        id: String,
        patch: wit::UserPatch,
    ) -> Result<wit::User, StoreError> {
        if patch.password_hash.as_deref().is_some_and(str::is_empty) {
            return Err(StoreError::Invalid(
                "password_hash must not be empty".to_owned(),
            ));
        }
        let row = self
            .dashboard_write(move |tx| {
                let mut user =
                    users::get(tx, &id)?.ok_or_else(|| DbError::NotFound(format!("user {id}")))?;
                apply_patch(&mut user, patch);
                users::update(tx, &user)
            })
            .await?;
        Ok(user_to_wit(row))
    }

    async fn touch_login(&mut self, id: String) -> Result<(), StoreError> {
        self.dashboard_write(move |tx| users::record_login(tx, &id))
            .await
    }

    async fn delete_user(&mut self, id: String) -> Result<(), StoreError> {
        self.dashboard_write(move |tx| users::delete(tx, &id)).await
    }

    async fn create_session(
        &mut self,
        user_id: String,
        token_hash: String,
        expires_at: i64,
    ) -> Result<wit::Session, StoreError> {
        if token_hash.is_empty() {
            return Err(StoreError::Invalid(
                "token_hash must not be empty".to_owned(),
            ));
        }
        let expires = clock::format_unix_millis(expires_at);
        let row = self
            .database_write(move |tx| {
                if users::get(tx, &user_id)?.is_none() {
                    return Err(DbError::NotFound(format!("user {user_id}")));
                }
                sessions::create(tx, &user_id, &token_hash, &expires)
            })
            .await?;
        Ok(wit::Session {
            id: row.id,
            user_id: row.user_id,
            created_at: clock::parse_unix_millis(&row.created_at).unwrap_or(0),
            expires_at: clock::parse_unix_millis(&row.expires_at).unwrap_or(expires_at),
        })
    }

    async fn delete_session(&mut self, token_hash: String) -> Result<bool, StoreError> {
        self.database_write(move |tx| sessions::delete_by_token_hash(tx, &token_hash))
            .await
    }

    async fn list_api_keys(
        &mut self,
        user_id: Option<String>,
    ) -> Result<Vec<wit::ApiKey>, StoreError> {
        let rows = self
            .dashboard_read(move |conn| match user_id {
                Some(user_id) => api_keys::list_for_user(conn, &user_id),
                None => api_keys::list_all(conn),
            })
            .await?;
        Ok(rows.into_iter().map(api_key_to_wit).collect())
    }

    async fn get_api_key(&mut self, id: String) -> Result<Option<wit::ApiKey>, StoreError> {
        let row = self
            .dashboard_read(move |conn| api_keys::get(conn, &id))
            .await?;
        Ok(row.map(api_key_to_wit))
    }

    async fn create_api_key(
        &mut self,
        user_id: String,
        key_prefix: String,
        key_hash: String,
        settings: wit::ApiKeySettings,
    ) -> Result<wit::ApiKey, StoreError> {
        if key_prefix.is_empty() || key_hash.is_empty() {
            return Err(StoreError::Invalid(
                "key_prefix and key_hash must not be empty".to_owned(),
            ));
        }
        let mut new = NewApiKey::new(&user_id, &settings.name, &key_prefix, &key_hash);
        apply_settings_to_new(&mut new, settings);
        let row = self
            .dashboard_write(move |tx| {
                if users::get(tx, &new.user_id)?.is_none() {
                    return Err(DbError::NotFound(format!("user {}", new.user_id)));
                }
                api_keys::insert(tx, &new)
            })
            .await?;
        Ok(api_key_to_wit(row))
    }

    async fn update_api_key(
        &mut self,
        id: String,
        settings: wit::ApiKeySettings,
    ) -> Result<wit::ApiKey, StoreError> {
        let row = self
            .dashboard_write(move |tx| {
                let mut key = api_keys::get(tx, &id)?
                    .ok_or_else(|| DbError::NotFound(format!("api key {id}")))?;
                apply_settings(&mut key, settings);
                api_keys::update(tx, &key)
            })
            .await?;
        Ok(api_key_to_wit(row))
    }

    async fn delete_api_keys(
        &mut self,
        user_id: String,
        ids: Vec<String>,
    ) -> Result<u32, StoreError> {
        if ids.len() > crate::db::MAX_LIST_LIMIT as usize {
            return Err(StoreError::Invalid(format!(
                "ids lists more than {} keys",
                crate::db::MAX_LIST_LIMIT
            )));
        }
        let deleted = self
            .dashboard_write(move |tx| api_keys::delete_for_user(tx, &user_id, &ids))
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}

impl PluginState {
    /// The call's database; a world without one answers `storage`, never a trap.
    pub(super) fn database(&self) -> Result<Database, StoreError> {
        self.capabilities
            .database
            .clone()
            .ok_or_else(|| StoreError::Storage("no database is available to this call".to_owned()))
    }

    /// Runs `read` on a read connection, crediting the wait to the time bound.
    pub(super) async fn dashboard_read<T, F>(&mut self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let database = self.database()?;
        self.host_wait(database.read(read))
            .await
            .map_err(store_error)
    }

    /// Runs `write`, a change to users or keys, in one transaction, crediting the wait to the
    /// time bound, then empties the gateway's verified-key cache and the billing store's
    /// accounts, which must not outlive the change (a disabled user, a disabled or deleted
    /// key, an account made unlimited).
    async fn dashboard_write<T, F>(&mut self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let outcome = self.database_write(write).await;
        if let Some(authenticator) = &self.capabilities.authenticator {
            authenticator.invalidate_all();
        }
        if let Some(billing) = &self.capabilities.billing {
            billing.forget_accounts();
        }
        outcome
    }

    /// Runs `write` in one transaction, crediting the wait to the time bound (for writes the
    /// gateway's key cache does not depend on: sessions, the registry, the legacy tables).
    pub(super) async fn database_write<T, F>(&mut self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let database = self.database()?;
        self.host_wait(database.write(write))
            .await
            .map_err(store_error)
    }
}

/// A taken username is reported as such, not as SQLite's constraint text.
fn username_conflict(error: DbError) -> DbError {
    match error {
        DbError::Conflict(_) => DbError::Conflict("username is taken".to_owned()),
        other => other,
    }
}

fn apply_patch(user: &mut UserRow, patch: wit::UserPatch) {
    if let Some(role) = patch.role {
        user.role = role_from_wit(role);
    }
    if let Some(enabled) = patch.enabled {
        user.enabled = enabled;
    }
    if let Some(hash) = patch.password_hash {
        user.password_hash = hash;
    }
    if let Some(unlimited) = patch.balance_unlimited {
        user.balance_unlimited = unlimited;
    }
}

fn apply_settings(key: &mut ApiKeyRow, settings: wit::ApiKeySettings) {
    key.name = settings.name;
    key.expires_at = settings.expires_at;
    key.enabled = settings.enabled;
    key.quota_remaining = settings.quota_remaining.map(NanoUsd);
    key.quota_unlimited = settings.quota_unlimited;
    key.model_limits_enabled = settings.model_limits_enabled;
    key.model_limits = settings.model_limits;
    key.ip_whitelist = settings.ip_whitelist;
    key.token_group = settings.group;
    key.max_multiplier = settings.max_multiplier.map(Multiplier::from_nanos);
    key.transforms_json = settings.transforms_json;
}

fn apply_settings_to_new(key: &mut NewApiKey, settings: wit::ApiKeySettings) {
    key.name = settings.name;
    key.expires_at = settings.expires_at;
    key.enabled = settings.enabled;
    key.quota_remaining = settings.quota_remaining.map(NanoUsd);
    key.quota_unlimited = settings.quota_unlimited;
    key.model_limits_enabled = settings.model_limits_enabled;
    key.model_limits = settings.model_limits;
    key.ip_whitelist = settings.ip_whitelist;
    key.token_group = settings.group;
    key.max_multiplier = settings.max_multiplier.map(Multiplier::from_nanos);
    key.transforms_json = settings.transforms_json;
}

/// The WIT role for a stored one.
pub(super) fn role_to_wit(role: DbRole) -> Role {
    match role {
        DbRole::SuperAdmin => Role::SuperAdmin,
        DbRole::Admin => Role::Admin,
        DbRole::User => Role::User,
    }
}

fn role_from_wit(role: Role) -> DbRole {
    match role {
        Role::SuperAdmin => DbRole::SuperAdmin,
        Role::Admin => DbRole::Admin,
        Role::User => DbRole::User,
    }
}

/// A user as the plugin sees it: everything but the password hash.
fn user_to_wit(row: UserRow) -> wit::User {
    wit::User {
        id: row.id,
        username: row.username,
        role: role_to_wit(row.role),
        enabled: row.enabled,
        balance: row.balance_nano_usd.0,
        balance_unlimited: row.balance_unlimited,
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_login_at: row.last_login_at,
    }
}

/// A key as the plugin sees it: everything but its hash.
fn api_key_to_wit(row: ApiKeyRow) -> wit::ApiKey {
    wit::ApiKey {
        id: row.id,
        user_id: row.user_id,
        name: row.name,
        key_prefix: row.key_prefix,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
        enabled: row.enabled,
        quota_remaining: row.quota_remaining.map(|quota| quota.0),
        quota_unlimited: row.quota_unlimited,
        model_limits_enabled: row.model_limits_enabled,
        model_limits: row.model_limits,
        ip_whitelist: row.ip_whitelist,
        group: row.token_group,
        max_multiplier: row.max_multiplier.map(Multiplier::nanos),
        transforms_json: row.transforms_json,
    }
}
