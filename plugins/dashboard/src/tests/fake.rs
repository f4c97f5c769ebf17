//! An in-memory [`Store`] with the host's documented behaviour: unique usernames, keys
//! deleted only for their owner, one ledger row per adjustment, channel keys write-only.
//! Crypto is deterministic and readable (`hash:<password>`, `sha:<secret>`), so a test can
//! search answers for a stored secret.

use std::cell::RefCell;

use crate::store::*;

/// Time in the fake: 2026-03-01T12:00:00Z.
pub const NOW_MS: i64 = 1_772_366_400_000;

#[derive(Default)]
pub struct State {
    next_id: u64,
    pub users: Vec<(User, String)>,
    /// (session id, user id, token hash, expires at)
    pub sessions: Vec<(String, String, String, i64)>,
    /// (key, stored hash)
    pub keys: Vec<(ApiKey, String)>,
    pub ledger: Vec<LedgerEntry>,
    /// (provider, channel keys by channel id)
    pub providers: Vec<(ProviderView, Vec<(String, String)>)>,
    pub records: Vec<RegistryRecord>,
    pub metadata: Vec<ModelMetadata>,
    pub legacy: Vec<(LegacyTable, String, String)>,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// Makes every store call fail with `storage`.
    pub broken: bool,
    pub calls: Vec<&'static str>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }
}

#[derive(Default)]
pub struct FakeStore {
    pub state: RefCell<State>,
}

const STAMP: &str = "2026-03-01T12:00:00.000Z";

fn same_table(a: LegacyTable, b: LegacyTable) -> bool {
    matches!(
        (a, b),
        (LegacyTable::Providers, LegacyTable::Providers)
            | (LegacyTable::ModelMappings, LegacyTable::ModelMappings)
            | (LegacyTable::GroupMembers, LegacyTable::GroupMembers)
    )
}

impl FakeStore {
    fn enter(&self, call: &'static str) -> StoreResult<std::cell::RefMut<'_, State>> {
        let mut state = self.state.borrow_mut();
        state.calls.push(call);
        if state.broken {
            return Err(StoreError::Storage(
                "disk I/O error at /var/lib/secret".into(),
            ));
        }
        Ok(state)
    }

    fn key_from(id: String, user_id: &str, prefix: &str, settings: &ApiKeySettings) -> ApiKey {
        ApiKey {
            id,
            user_id: user_id.to_owned(),
            name: settings.name.clone(),
            key_prefix: prefix.to_owned(),
            created_at: STAMP.to_owned(),
            expires_at: settings.expires_at.clone(),
            last_used_at: None,
            enabled: settings.enabled,
            quota_remaining: settings.quota_remaining,
            quota_unlimited: settings.quota_unlimited,
            model_limits_enabled: settings.model_limits_enabled,
            model_limits: settings.model_limits.clone(),
            ip_whitelist: settings.ip_whitelist.clone(),
            group: settings.group.clone(),
            max_multiplier: settings.max_multiplier,
            transforms_json: settings.transforms_json.clone(),
        }
    }

    /// Writes `input` as provider `id`, keeping stored channel keys where `api_key` is absent.
    fn write_provider(
        state: &mut State,
        id: String,
        input: &ProviderInput,
        old_keys: &[(String, String)],
        priority: i64,
    ) -> StoreResult<(ProviderView, Vec<(String, String)>)> {
        let mut views = Vec::new();
        let mut keys = Vec::new();
        for channel in &input.channels {
            let channel_id = match &channel.id {
                Some(id) => id.clone(),
                None => state.id("c"),
            };
            let key = match (&channel.api_key, &channel.id) {
                (Some(key), _) if !key.is_empty() => key.clone(),
                (_, Some(id)) => old_keys
                    .iter()
                    .find(|(channel, _)| channel == id)
                    .map(|(_, key)| key.clone())
                    .ok_or_else(|| StoreError::Invalid(format!("api_key: channel {id}")))?,
                _ => {
                    return Err(StoreError::Invalid(
                        "api_key: a new channel needs one".into(),
                    ));
                }
            };
            keys.push((channel_id.clone(), key));
            views.push(ChannelView {
                id: channel_id,
                name: channel.name.clone(),
                base_url: channel.base_url.clone(),
                weight: channel.weight,
                enabled: channel.enabled,
            });
        }
        let provider = Provider {
            id,
            name: input.name.clone(),
            provider_type: input.provider_type,
            enabled: input.enabled,
            priority,
            max_retries: input.max_retries,
            groups: input.groups.clone(),
            models: input
                .models
                .iter()
                .map(|model| ModelEntry {
                    model: model.model.clone(),
                    redirect: model.redirect.clone(),
                    multiplier: model.multiplier,
                })
                .collect(),
            channels: views
                .iter()
                .map(|view| Channel {
                    id: view.id.clone(),
                    name: view.name.clone(),
                    weight: view.weight,
                    enabled: view.enabled,
                })
                .collect(),
        };
        Ok((
            ProviderView {
                provider,
                channels: views,
                transforms_json: input.transforms_json.clone(),
                created_at: STAMP.to_owned(),
                updated_at: STAMP.to_owned(),
            },
            keys,
        ))
    }
}

impl Store for FakeStore {
    fn now_ms(&self) -> i64 {
        NOW_MS
    }

    fn warn(&self, message: &str) {
        self.state.borrow_mut().warnings.push(message.to_owned());
    }

    fn info(&self, message: &str) {
        self.state.borrow_mut().infos.push(message.to_owned());
    }

    fn hash_password(&self, password: &str) -> String {
        format!("hash:{password}")
    }

    fn verify_password(&self, password: &str, hash: &str) -> bool {
        hash == format!("hash:{password}")
    }

    fn random_token(&self, bytes: u32) -> String {
        let mut state = self.state.borrow_mut();
        let n = state.id("");
        let length = usize::try_from(bytes * 4 / 3 + 1).unwrap();
        format!("tok{n}{}", "x".repeat(length))
            .chars()
            .take(length)
            .collect()
    }

    fn hash_secret(&self, secret: &str) -> String {
        format!("sha:{secret}")
    }

    fn count_users(&self) -> StoreResult<u64> {
        Ok(self.enter("count_users")?.users.len() as u64)
    }

    fn list_users(&self) -> StoreResult<Vec<User>> {
        Ok(self
            .enter("list_users")?
            .users
            .iter()
            .map(|(u, _)| u.clone())
            .collect())
    }

    fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let state = self.enter("get_user")?;
        Ok(state
            .users
            .iter()
            .find(|(u, _)| u.id == id)
            .map(|(u, _)| u.clone()))
    }

    fn credentials(&self, username: &str) -> StoreResult<Option<(User, String)>> {
        let state = self.enter("credentials")?;
        Ok(state
            .users
            .iter()
            .find(|(u, _)| u.username == username)
            .cloned())
    }

    fn create_user(&self, new: &NewUser) -> StoreResult<User> {
        let mut state = self.enter("create_user")?;
        if state.users.iter().any(|(u, _)| u.username == new.username) {
            return Err(StoreError::Conflict(format!(
                "username {} is taken",
                new.username
            )));
        }
        let user = User {
            id: state.id("u"),
            username: new.username.clone(),
            role: new.role,
            enabled: new.enabled,
            balance: 0,
            balance_unlimited: new.balance_unlimited,
            created_at: STAMP.to_owned(),
            updated_at: STAMP.to_owned(),
            last_login_at: None,
        };
        state.users.push((user.clone(), new.password_hash.clone()));
        Ok(user)
    }

    fn update_user(&self, id: &str, patch: &UserPatch) -> StoreResult<User> {
        let mut state = self.enter("update_user")?;
        let (user, hash) = state
            .users
            .iter_mut()
            .find(|(u, _)| u.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        if let Some(role) = patch.role {
            user.role = role;
        }
        if let Some(enabled) = patch.enabled {
            user.enabled = enabled;
        }
        if let Some(new_hash) = &patch.password_hash {
            *hash = new_hash.clone();
        }
        if let Some(unlimited) = patch.balance_unlimited {
            user.balance_unlimited = unlimited;
        }
        Ok(user.clone())
    }

    fn touch_login(&self, id: &str) -> StoreResult<()> {
        let mut state = self.enter("touch_login")?;
        if let Some((user, _)) = state.users.iter_mut().find(|(u, _)| u.id == id) {
            user.last_login_at = Some(STAMP.to_owned());
        }
        Ok(())
    }

    fn delete_user(&self, id: &str) -> StoreResult<()> {
        let mut state = self.enter("delete_user")?;
        state.users.retain(|(u, _)| u.id != id);
        state.sessions.retain(|(_, user, _, _)| user != id);
        state.keys.retain(|(k, _)| k.user_id != id);
        Ok(())
    }

    fn create_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> StoreResult<Session> {
        let mut state = self.enter("create_session")?;
        let id = state.id("s");
        state.sessions.push((
            id.clone(),
            user_id.to_owned(),
            token_hash.to_owned(),
            expires_at,
        ));
        Ok(Session {
            id,
            user_id: user_id.to_owned(),
            created_at: NOW_MS,
            expires_at,
        })
    }

    fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let mut state = self.enter("delete_session")?;
        let before = state.sessions.len();
        state.sessions.retain(|(_, _, hash, _)| hash != token_hash);
        Ok(state.sessions.len() < before)
    }

    fn list_api_keys(&self, user_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let state = self.enter("list_api_keys")?;
        Ok(state
            .keys
            .iter()
            .rev()
            .filter(|(k, _)| user_id.is_none_or(|user| k.user_id == user))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let state = self.enter("get_api_key")?;
        Ok(state
            .keys
            .iter()
            .find(|(k, _)| k.id == id)
            .map(|(k, _)| k.clone()))
    }

    fn create_api_key(
        &self,
        user_id: &str,
        key_prefix: &str,
        key_hash: &str,
        settings: &ApiKeySettings,
    ) -> StoreResult<ApiKey> {
        let mut state = self.enter("create_api_key")?;
        let id = state.id("k");
        let key = Self::key_from(id, user_id, key_prefix, settings);
        state.keys.push((key.clone(), key_hash.to_owned()));
        Ok(key)
    }

    fn update_api_key(&self, id: &str, settings: &ApiKeySettings) -> StoreResult<ApiKey> {
        let mut state = self.enter("update_api_key")?;
        let (key, _) = state
            .keys
            .iter_mut()
            .find(|(k, _)| k.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        let updated = Self::key_from(key.id.clone(), &key.user_id, &key.key_prefix, settings);
        *key = updated.clone();
        Ok(updated)
    }

    fn delete_api_keys(&self, user_id: &str, ids: &[String]) -> StoreResult<u32> {
        let mut state = self.enter("delete_api_keys")?;
        let before = state.keys.len();
        state
            .keys
            .retain(|(k, _)| !(k.user_id == user_id && ids.contains(&k.id)));
        Ok(u32::try_from(before - state.keys.len()).unwrap())
    }

    fn adjust(
        &self,
        user_id: &str,
        adjustment: Adjustment,
        meta_json: &str,
    ) -> StoreResult<LedgerEntry> {
        let mut state = self.enter("adjust")?;
        let id = state.id("l");
        let (user, _) = state
            .users
            .iter_mut()
            .find(|(u, _)| u.id == user_id)
            .ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))?;
        let delta = match adjustment {
            Adjustment::Add(amount) => amount,
            Adjustment::Set(amount) => amount - user.balance,
        };
        user.balance += delta;
        let entry = LedgerEntry {
            id,
            user_id: user_id.to_owned(),
            kind: LedgerKind::AdminAdjustment,
            delta,
            balance_after: user.balance,
            request_id: None,
            meta_json: meta_json.to_owned(),
            created_at: STAMP.to_owned(),
        };
        state.ledger.push(entry.clone());
        Ok(entry)
    }

    fn list_ledger(
        &self,
        user_id: Option<&str>,
        limit: u32,
        before: Option<&str>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let state = self.enter("list_ledger")?;
        let mut rows: Vec<&LedgerEntry> = state.ledger.iter().rev().collect();
        if let Some(before) = before {
            let position = rows
                .iter()
                .position(|row| row.id == before)
                .ok_or_else(|| StoreError::NotFound(format!("ledger row {before}")))?;
            rows.drain(..=position);
        }
        Ok(rows
            .into_iter()
            .filter(|row| user_id.is_none_or(|user| row.user_id == user))
            .take(usize::try_from(limit).unwrap())
            .cloned()
            .collect())
    }

    fn list_providers(&self) -> StoreResult<Vec<ProviderView>> {
        let state = self.enter("list_providers")?;
        let mut views: Vec<ProviderView> = state.providers.iter().map(|(p, _)| p.clone()).collect();
        views.sort_by_key(|view| view.provider.priority);
        Ok(views)
    }

    fn get_provider(&self, id: &str) -> StoreResult<Option<ProviderView>> {
        let state = self.enter("get_provider")?;
        Ok(state
            .providers
            .iter()
            .find(|(p, _)| p.provider.id == id)
            .map(|(p, _)| p.clone()))
    }

    fn create_provider(&self, input: &ProviderInput) -> StoreResult<ProviderView> {
        let mut state = self.enter("create_provider")?;
        let id = state.id("p");
        let priority = input.priority.unwrap_or_else(|| {
            state
                .providers
                .iter()
                .map(|(p, _)| p.provider.priority + 1)
                .max()
                .unwrap_or(0)
        });
        let written = Self::write_provider(&mut state, id, input, &[], priority)?;
        state.providers.push(written.clone());
        Ok(written.0)
    }

    fn update_provider(&self, id: &str, input: &ProviderInput) -> StoreResult<ProviderView> {
        let mut state = self.enter("update_provider")?;
        let index = state
            .providers
            .iter()
            .position(|(p, _)| p.provider.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("provider {id}")))?;
        let old_keys = state.providers[index].1.clone();
        let priority = input
            .priority
            .unwrap_or(state.providers[index].0.provider.priority);
        let written = Self::write_provider(&mut state, id.to_owned(), input, &old_keys, priority)?;
        state.providers[index] = written.clone();
        Ok(written.0)
    }

    fn delete_provider(&self, id: &str) -> StoreResult<bool> {
        let mut state = self.enter("delete_provider")?;
        let before = state.providers.len();
        state.providers.retain(|(p, _)| p.provider.id != id);
        Ok(state.providers.len() < before)
    }

    fn reorder_providers(&self, provider_ids: &[String]) -> StoreResult<()> {
        let mut state = self.enter("reorder_providers")?;
        for id in provider_ids {
            if !state.providers.iter().any(|(p, _)| &p.provider.id == id) {
                return Err(StoreError::NotFound(format!("provider {id}")));
            }
        }
        for (priority, id) in provider_ids.iter().enumerate() {
            if let Some((view, _)) = state
                .providers
                .iter_mut()
                .find(|(p, _)| &p.provider.id == id)
            {
                view.provider.priority = i64::try_from(priority).unwrap();
            }
        }
        Ok(())
    }

    fn list_records(&self) -> StoreResult<Vec<RegistryRecord>> {
        Ok(self.enter("list_records")?.records.clone())
    }

    fn get_record(&self, id: &str) -> StoreResult<Option<RegistryRecord>> {
        Ok(self
            .enter("get_record")?
            .records
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }

    fn create_record(&self, fields: &RegistryFields) -> StoreResult<RegistryRecord> {
        let mut state = self.enter("create_record")?;
        if state
            .records
            .iter()
            .any(|r| r.logical_model == fields.logical_model && r.provider_id == fields.provider_id)
        {
            return Err(StoreError::Conflict(
                "logical_model and provider_id are taken".into(),
            ));
        }
        let record = RegistryRecord {
            id: state.id("r"),
            logical_model: fields.logical_model.clone(),
            provider_id: fields.provider_id.clone(),
            upstream_model: fields.upstream_model.clone(),
            capabilities_json: fields.capabilities_json.clone(),
            enabled: fields.enabled,
            priority: fields.priority,
            created_at: STAMP.to_owned(),
            updated_at: STAMP.to_owned(),
        };
        state.records.push(record.clone());
        Ok(record)
    }

    fn update_record(&self, id: &str, fields: &RegistryFields) -> StoreResult<RegistryRecord> {
        let mut state = self.enter("update_record")?;
        let record = state
            .records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        record.logical_model = fields.logical_model.clone();
        record.provider_id = fields.provider_id.clone();
        record.upstream_model = fields.upstream_model.clone();
        record.capabilities_json = fields.capabilities_json.clone();
        record.enabled = fields.enabled;
        record.priority = fields.priority;
        Ok(record.clone())
    }

    fn delete_record(&self, id: &str) -> StoreResult<bool> {
        let mut state = self.enter("delete_record")?;
        let before = state.records.len();
        state.records.retain(|r| r.id != id);
        Ok(state.records.len() < before)
    }

    fn list_metadata(&self) -> StoreResult<Vec<ModelMetadata>> {
        Ok(self.enter("list_metadata")?.metadata.clone())
    }

    fn get_metadata(&self, model_id: &str) -> StoreResult<Option<ModelMetadata>> {
        Ok(self
            .enter("get_metadata")?
            .metadata
            .iter()
            .find(|m| m.model_id == model_id)
            .cloned())
    }

    fn upsert_metadata(&self, metadata: &ModelMetadata) -> StoreResult<ModelMetadata> {
        let mut state = self.enter("upsert_metadata")?;
        let mut row = metadata.clone();
        row.updated_at = STAMP.to_owned();
        state.metadata.retain(|m| m.model_id != row.model_id);
        state.metadata.push(row.clone());
        Ok(row)
    }

    fn delete_metadata(&self, model_id: &str) -> StoreResult<bool> {
        let mut state = self.enter("delete_metadata")?;
        let before = state.metadata.len();
        state.metadata.retain(|m| m.model_id != model_id);
        Ok(state.metadata.len() < before)
    }

    fn list_legacy(&self, table: LegacyTable) -> StoreResult<Vec<String>> {
        let state = self.enter("list_legacy")?;
        Ok(state
            .legacy
            .iter()
            .filter(|(t, _, _)| same_table(*t, table))
            .map(|(_, _, row)| row.clone())
            .collect())
    }

    fn delete_legacy(&self, table: LegacyTable, id: &str) -> StoreResult<bool> {
        let mut state = self.enter("delete_legacy")?;
        let before = state.legacy.len();
        state
            .legacy
            .retain(|(t, row_id, _)| !(same_table(*t, table) && row_id == id));
        Ok(state.legacy.len() < before)
    }
}
