//! The dashboard suite: the role rules and secret-hiding rules of the dashboard API (DESIGN §9,
//! issue #6) on any dashboard plugin. The component is loaded as the server loads it and its
//! `handle` is driven with crafted requests over fixtures in a private in-memory database: a
//! `super_admin`, an `admin` and two `user`s, each with a live session and an API key, a
//! provider whose channels hold known API keys, model metadata, a registry record and ledger
//! rows. The caller of each request is resolved from its session token as the server does.
//!
//! Every response body of the suite is kept; `secrets-hidden`, the last check, scans them all.
//! There are no reference checks: `--reference` changes nothing here.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::{CheckOutcome, Report};
use crate::billing::BillingStore;
use crate::dashboard::bootstrap;
use crate::db::api_keys::{self, NewApiKey};
use crate::db::ledger::{self, Adjustment, LedgerKind, LedgerRow};
use crate::db::registry::{self, ModelMetadataRow, NewModelRecord};
use crate::db::routing::{self, ChannelInput, ModelInput, ProviderInput, ProviderType};
use crate::db::users::{Role, UserRow};
use crate::db::{Database, DbError, clock, sessions, users};
use crate::gateway::auth::Authenticator;
use crate::money::{Multiplier, NanoUsd};
use crate::plugins::PluginEngine;
use crate::plugins::crypto::{hash_secret, random_token};
use crate::plugins::dashboard::{Caller, DashboardPlugin, DashboardRequest, DashboardServices};
use crate::plugins::routing_admin::RoutingWrites;
use crate::routing::{RoutingSnapshot, SharedSnapshot};

/// The checks, in the order they run (`secrets-hidden` last: it scans every earlier answer).
pub const CHECKS: &[&str] = &[
    "loads",
    "anonymous-401",
    "user-forbidden",
    "other-users-keys",
    "no-escalation",
    "key-shown-once",
    "balance-ledger",
    "sessions",
    "bad-input",
    "secrets-hidden",
];

/// The password of every fixture user.
const PASSWORD: &str = "conformance-pass-1";
/// The model whose metadata is seeded; its id has a `/`.
const METADATA_MODEL: &str = "openai/gpt-4o";
/// The largest body the host hands a dashboard plugin (`dashboard::DASHBOARD_BODY_MAX_BYTES`).
const HUGE_BODY_BYTES: usize = 1 << 20;

/// Runs the dashboard suite on the component `bytes` named `name`.
pub async fn check(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Report {
    let loaded = match DashboardPlugin::load(engine, name, bytes) {
        Ok(plugin) => Ok(Suite {
            plugin,
            fixture: Fixture::seed().await.map_err(|e| format!("fixtures: {e}")),
            bodies: Mutex::default(),
            revealed: Mutex::default(),
        }),
        Err(error) => Err(error.to_string()),
    };
    super::run_checks("dashboard", name, CHECKS, loaded).await
}

/// A fixture user with a live session.
struct Actor {
    id: String,
    username: String,
    token: String,
}

/// What the suite seeded.
struct Fixture {
    services: DashboardServices,
    root: Actor,
    admin: Actor,
    alice: Actor,
    bob: Actor,
    /// Alice's and Bob's seeded key ids.
    alice_key: String,
    bob_key: String,
    provider_id: String,
    record_id: String,
    /// Texts no answer may contain: channel API keys and the seeded keys' full text.
    secrets: Mutex<Vec<String>>,
}

impl Fixture {
    async fn seed() -> Result<Fixture, String> {
        let db = Database::open_in_memory().map_err(|e| e.to_string())?;
        let actor = |username: &'static str, role| {
            let db = db.clone();
            async move { seed_actor(&db, username, role).await }
        };
        let root = actor("conf_root", Role::SuperAdmin).await?;
        let admin = actor("conf_admin", Role::Admin).await?;
        let alice = actor("conf_alice", Role::User).await?;
        let bob = actor("conf_bob", Role::User).await?;
        let mut secrets = Vec::new();
        let mut keys = Vec::new();
        for user in [&root, &admin, &alice, &bob] {
            let full = format!("sk-{}", token()?);
            let new = NewApiKey::new(
                &user.id,
                "seeded",
                api_keys::key_prefix(&full),
                &hash_secret(&full),
            );
            keys.push(
                db.write(move |tx| api_keys::insert(tx, &new))
                    .await
                    .map_err(|e| e.to_string())?
                    .id,
            );
            secrets.push(full);
        }
        let channel_keys = [
            format!("sk-channel-{}", token()?),
            format!("sk-channel-{}", token()?),
        ];
        secrets.extend(channel_keys.iter().cloned());
        let provider = ProviderInput {
            name: "conformance-upstream".to_owned(),
            provider_type: ProviderType::ChatCompletion,
            max_retries: -1,
            transforms_json: "[]".to_owned(),
            groups: Vec::new(),
            enabled: true,
            priority: Some(0),
            models: vec![ModelInput {
                model_name: "gpt-4o".to_owned(),
                redirect: None,
                multiplier: Multiplier::ONE,
            }],
            channels: channel_keys
                .iter()
                .enumerate()
                .map(|(index, key)| ChannelInput {
                    id: None,
                    name: format!("channel-{index}"),
                    base_url: "http://127.0.0.1:9".to_owned(),
                    api_key: Some(key.clone()),
                    weight: 1,
                    enabled: true,
                })
                .collect(),
        };
        let (provider_id, record_id) = {
            let (alice_id, bob_id) = (alice.id.clone(), bob.id.clone());
            db.write(move |tx| {
                let provider = routing::create_provider(tx, &provider)?;
                let provider_id = provider.provider.id;
                let record = registry::insert(
                    tx,
                    &NewModelRecord {
                        logical_model: "gpt-4o".to_owned(),
                        provider_id: provider_id.clone(),
                        upstream_model: "gpt-4o".to_owned(),
                        capabilities_json: "{}".to_owned(),
                        enabled: true,
                        priority: 0,
                    },
                )?;
                registry::upsert_metadata(
                    tx,
                    &ModelMetadataRow {
                        model_id: METADATA_MODEL.to_owned(),
                        input_cost_per_token_nano: Some(2_500),
                        output_cost_per_token_nano: Some(10_000),
                        ..ModelMetadataRow::default()
                    },
                )?;
                for (user, amount) in [(alice_id, 5_000_000_000), (bob_id, 3_000_000_000)] {
                    ledger::adjust(
                        tx,
                        &user,
                        Adjustment::Set(NanoUsd(amount)),
                        r#"{"source":"conformance"}"#,
                    )?;
                }
                Ok((provider_id, record.id))
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let rows = db
            .read(routing::load_routing_rows)
            .await
            .map_err(|e| e.to_string())?;
        let snapshot = SharedSnapshot::new(RoutingSnapshot::from_rows(rows));
        let services = DashboardServices {
            billing: BillingStore::new(db.clone()).map_err(|e| e.to_string())?,
            database: db,
            routing_writes: RoutingWrites::new(snapshot),
            authenticator: Authenticator::new(),
        };
        let [_, _, alice_key, bob_key] =
            <[String; 4]>::try_from(keys).map_err(|_| "four keys were not created".to_owned())?;
        Ok(Fixture {
            services,
            root,
            admin,
            alice,
            bob,
            alice_key,
            bob_key,
            provider_id,
            record_id,
            secrets: Mutex::new(secrets),
        })
    }

    fn db(&self) -> &Database {
        &self.services.database
    }

    async fn read<T, F>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.db()
            .read(f)
            .await
            .map_err(|e| format!("reading the fixtures: {e}"))
    }

    async fn user(&self, id: &str) -> Result<Option<UserRow>, String> {
        let id = id.to_owned();
        self.read(move |conn| users::get(conn, &id)).await
    }

    async fn ledger_of(&self, id: &str) -> Result<Vec<LedgerRow>, String> {
        let id = id.to_owned();
        self.read(move |conn| ledger::list(conn, Some(&id), 1000, None))
            .await
    }

    /// The caller `token` logs in, as the server resolves it: a live session of an enabled user.
    async fn caller(&self, token: &str) -> Result<Option<Caller>, String> {
        let hash = hash_secret(token);
        self.read(move |conn| {
            let Some(session) = sessions::by_token_hash(conn, &hash)? else {
                return Ok(None);
            };
            if session.is_expired_at(&clock::now()) {
                return Ok(None);
            }
            Ok(users::get(conn, &session.user_id)?
                .filter(|user| user.enabled)
                .map(|user| Caller {
                    user_id: user.id,
                    username: user.username,
                    role: user.role,
                    session_id: session.id,
                }))
        })
        .await
    }
}

async fn seed_actor(db: &Database, username: &str, role: Role) -> Result<Actor, String> {
    let user = bootstrap::create_user(db, username, PASSWORD, role)
        .await
        .map_err(|e| e.to_string())?;
    let token = token()?;
    let (id, hash) = (user.id.clone(), hash_secret(&token));
    db.write(move |tx| sessions::create(tx, &id, &hash, &clock::seconds_from_now(3600)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Actor {
        id: user.id,
        username: user.username,
        token,
    })
}

fn token() -> Result<String, String> {
    random_token(24).map_err(|e| e.to_string())
}

/// One answer of the plugin.
struct Answer {
    status: u16,
    body: Value,
}

struct Suite {
    plugin: DashboardPlugin,
    fixture: Result<Fixture, String>,
    /// Every response body, as text.
    bodies: Mutex<Vec<String>>,
    /// Full key texts answered by a create, each allowed in exactly one body.
    revealed: Mutex<Vec<String>>,
}

impl super::Suite for Suite {
    async fn run(&self, name: &str) -> CheckOutcome {
        let fx = self.fixture.as_ref().map_err(Clone::clone)?;
        match name {
            "anonymous-401" => self.anonymous_401(fx).await,
            "user-forbidden" => self.user_forbidden(fx).await,
            "other-users-keys" => self.other_users_keys(fx).await,
            "no-escalation" => self.no_escalation(fx).await,
            "key-shown-once" => self.key_shown_once(fx).await,
            "balance-ledger" => self.balance_ledger(fx).await,
            "sessions" => self.sessions(fx).await,
            "bad-input" => self.bad_input(fx).await,
            "secrets-hidden" => self.secrets_hidden(fx).await,
            other => Err(format!("no such check `{other}`")),
        }
    }
}

/// A JSON body.
fn body(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

impl Suite {
    /// `method path` (query after `?`) with `body`, as the holder of `token` (none: anonymous).
    async fn call(
        &self,
        fx: &Fixture,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let caller = match token {
            Some(token) => fx.caller(token).await?,
            None => None,
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = DashboardRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            body,
            caller,
            session_token: token.map(str::to_owned),
        };
        let answered = self
            .plugin
            .handle("conformance", request, &fx.services)
            .await
            .map_err(|error| format!("{method} {}: {error}", shorten(path)))?;
        let text = String::from_utf8_lossy(&answered.body).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Ok(mut bodies) = self.bodies.lock() {
            bodies.push(text);
        }
        Ok(Answer {
            status: answered.status,
            body,
        })
    }

    /// Calls and requires one of `statuses`.
    async fn expect(
        &self,
        fx: &Fixture,
        token: Option<&str>,
        (method, path, payload): (&str, &str, Vec<u8>),
        statuses: &[u16],
        why: &str,
    ) -> Result<Answer, String> {
        let answer = self.call(fx, token, method, path, payload).await?;
        if statuses.contains(&answer.status) {
            Ok(answer)
        } else {
            Err(format!(
                "{method} {} {why}: answered {}, expected {statuses:?}",
                shorten(path),
                answer.status
            ))
        }
    }

    /// Every route that needs a session, with a plausible body.
    fn protected_routes(fx: &Fixture) -> Vec<(&'static str, String, Vec<u8>)> {
        let user = json!({"username": "conf_newbie", "password": PASSWORD, "role": "user"});
        let token = json!({"name": "k"});
        let provider = json!({"name": "p", "provider_type": "chat_completion",
            "models": {"m": {}}, "channels": [{"name": "c", "base_url": "http://127.0.0.1:9",
            "api_key": "sk-x"}]});
        let meta = json!({"input_cost_per_token_nano": "1"});
        let record = json!({"logical_model": "m", "provider_id": fx.provider_id,
            "upstream_model": "m"});
        let none = Vec::new;
        vec![
            ("GET", "/auth/me".to_owned(), none()),
            ("POST", "/auth/logout".to_owned(), none()),
            ("GET", "/users".to_owned(), none()),
            ("POST", "/users".to_owned(), body(&user)),
            ("GET", format!("/users/{}", fx.alice.id), none()),
            (
                "PUT",
                format!("/users/{}", fx.alice.id),
                body(&json!({"role": "admin"})),
            ),
            ("DELETE", format!("/users/{}", fx.bob.id), none()),
            ("GET", "/tokens".to_owned(), none()),
            ("POST", "/tokens".to_owned(), body(&token)),
            (
                "POST",
                "/tokens/batch-delete".to_owned(),
                body(&json!({"ids": [fx.alice_key]})),
            ),
            ("GET", format!("/tokens/{}", fx.alice_key), none()),
            ("PUT", format!("/tokens/{}", fx.alice_key), body(&token)),
            ("DELETE", format!("/tokens/{}", fx.alice_key), none()),
            ("GET", "/providers".to_owned(), none()),
            ("POST", "/providers".to_owned(), body(&provider)),
            (
                "POST",
                "/providers/reorder".to_owned(),
                body(&json!({"provider_ids": [fx.provider_id]})),
            ),
            ("GET", format!("/providers/{}", fx.provider_id), none()),
            (
                "PUT",
                format!("/providers/{}", fx.provider_id),
                body(&json!({"enabled": false})),
            ),
            ("DELETE", format!("/providers/{}", fx.provider_id), none()),
            ("GET", "/model-metadata".to_owned(), none()),
            ("GET", format!("/model-metadata/{METADATA_MODEL}"), none()),
            (
                "PUT",
                format!("/model-metadata/{METADATA_MODEL}"),
                body(&meta),
            ),
            (
                "DELETE",
                format!("/model-metadata/{METADATA_MODEL}"),
                none(),
            ),
            ("GET", "/models".to_owned(), none()),
            ("POST", "/models".to_owned(), body(&record)),
            ("GET", format!("/models/{}", fx.record_id), none()),
            ("PUT", format!("/models/{}", fx.record_id), body(&record)),
            ("DELETE", format!("/models/{}", fx.record_id), none()),
            ("GET", "/ledger".to_owned(), none()),
            ("GET", "/legacy/providers".to_owned(), none()),
            ("DELETE", "/legacy/providers/1".to_owned(), none()),
        ]
    }

    /// The fixtures nobody should have changed: users, keys, provider, record, metadata.
    async fn state(&self, fx: &Fixture) -> Result<Value, String> {
        let provider_id = fx.provider_id.clone();
        let record_id = fx.record_id.clone();
        self.read_state(fx, provider_id, record_id).await
    }

    async fn read_state(
        &self,
        fx: &Fixture,
        provider_id: String,
        record_id: String,
    ) -> Result<Value, String> {
        fx.read(move |conn| {
            let users: Vec<Value> = users::list(conn)?
                .into_iter()
                .map(|u| {
                    json!([
                        u.id,
                        u.username,
                        u.role.as_str(),
                        u.enabled,
                        u.balance_nano_usd.to_string(),
                        u.password_hash
                    ])
                })
                .collect();
            let keys: Vec<Value> = api_keys::list_all(conn)?
                .into_iter()
                .map(|k| json!([k.id, k.user_id, k.name, k.enabled]))
                .collect();
            let provider = routing::get_provider(conn, &provider_id)?
                .map(|p| json!([p.provider.enabled, p.provider.priority, p.channels.len()]));
            let record = registry::get(conn, &record_id)?.map(|r| r.upstream_model);
            let metadata = registry::get_metadata(conn, METADATA_MODEL)?.is_some();
            let ledger = ledger::list(conn, None, 1000, None)?.len();
            Ok(json!({"users": users, "keys": keys, "provider": provider,
                "record": record, "metadata": metadata, "ledger": ledger}))
        })
        .await
    }

    async fn unchanged(&self, fx: &Fixture, before: &Value, after_what: &str) -> CheckOutcome {
        let after = self.state(fx).await?;
        if &after == before {
            Ok(())
        } else {
            Err(format!(
                "{after_what} changed the stored users, keys, providers, models or ledger"
            ))
        }
    }

    async fn anonymous_401(&self, fx: &Fixture) -> CheckOutcome {
        let before = self.state(fx).await?;
        for (method, path, payload) in Self::protected_routes(fx) {
            self.expect(
                fx,
                None,
                (method, &path, payload.clone()),
                &[401],
                "without a session",
            )
            .await?;
            // An unknown or logged-out token reaches the plugin as a token with no caller.
            self.expect(
                fx,
                Some("not-a-live-session"),
                (method, &path, payload),
                &[401],
                "with a dead session token",
            )
            .await?;
        }
        self.unchanged(fx, &before, "anonymous requests").await
    }

    async fn user_forbidden(&self, fx: &Fixture) -> CheckOutcome {
        let before = self.state(fx).await?;
        let alice = Some(fx.alice.token.as_str());
        let balance = body(&json!({"balance_nano_usd": "999000000000"}));
        let mut forbidden: Vec<(&str, String, Vec<u8>)> = Self::protected_routes(fx)
            .into_iter()
            .filter(|(_, path, _)| {
                [
                    "/users",
                    "/providers",
                    "/model-metadata",
                    "/models",
                    "/legacy",
                ]
                .iter()
                .any(|prefix| path.starts_with(prefix))
            })
            .collect();
        forbidden.push(("PUT", format!("/users/{}", fx.alice.id), balance.clone()));
        forbidden.push(("PUT", format!("/users/{}", fx.bob.id), balance));
        forbidden.push((
            "PUT",
            format!("/users/{}", fx.alice.id),
            body(&json!({"balance_unlimited": true})),
        ));
        for (method, path, payload) in forbidden {
            self.expect(fx, alice, (method, &path, payload), &[403], "as a `user`")
                .await?;
        }
        self.expect(
            fx,
            alice,
            ("GET", &format!("/ledger?user_id={}", fx.bob.id), Vec::new()),
            &[403, 404],
            "(another user's ledger) as a `user`",
        )
        .await?;
        let own = self
            .expect(
                fx,
                alice,
                ("GET", "/ledger", Vec::new()),
                &[200],
                "as a `user`",
            )
            .await?;
        let foreign = own.body.as_array().into_iter().flatten().any(|row| {
            row.get("user_id")
                .and_then(Value::as_str)
                .is_some_and(|user| user != fx.alice.id)
        });
        if foreign {
            return Err("GET /ledger answered a `user` another user's rows".to_owned());
        }
        self.unchanged(fx, &before, "a `user`'s forbidden requests")
            .await
    }

    async fn other_users_keys(&self, fx: &Fixture) -> CheckOutcome {
        let before = self.state(fx).await?;
        let alice = Some(fx.alice.token.as_str());
        let path = format!("/tokens/{}", fx.bob_key);
        let why = "(another user's key) as its non-owner";
        for (method, payload) in [
            ("GET", Vec::new()),
            (
                "PUT",
                body(&json!({"name": "taken-over", "enabled": false})),
            ),
            ("DELETE", Vec::new()),
        ] {
            let answer = self
                .expect(fx, alice, (method, &path, payload), &[403, 404], why)
                .await?;
            // An error may name the id asked for; the key itself carries its owner.
            if answer.body.to_string().contains(&fx.bob.id) {
                return Err(format!("{method} {path} answered the other user's key"));
            }
        }
        self.call(
            fx,
            alice,
            "POST",
            "/tokens/batch-delete",
            body(&json!({"ids": [fx.bob_key]})),
        )
        .await?;
        let listed = self
            .expect(
                fx,
                alice,
                ("GET", "/tokens", Vec::new()),
                &[200],
                "as a `user`",
            )
            .await?;
        if listed.body.to_string().contains(&fx.bob_key) {
            return Err("GET /tokens listed another user's key".to_owned());
        }
        self.unchanged(fx, &before, "requests on another user's key")
            .await
    }

    async fn no_escalation(&self, fx: &Fixture) -> CheckOutcome {
        let before = self.state(fx).await?;
        let admin = Some(fx.admin.token.as_str());
        let refused = [400, 403, 404, 409];
        let attempts: Vec<(&str, String, Value)> = vec![
            (
                "POST",
                "/users".to_owned(),
                json!({"username": "conf_sneaky", "password": PASSWORD, "role": "super_admin"}),
            ),
            (
                "PUT",
                format!("/users/{}", fx.admin.id),
                json!({"role": "super_admin"}),
            ),
            (
                "PUT",
                format!("/users/{}", fx.alice.id),
                json!({"role": "super_admin"}),
            ),
            (
                "PUT",
                format!("/users/{}", fx.root.id),
                json!({"role": "user"}),
            ),
            (
                "PUT",
                format!("/users/{}", fx.root.id),
                json!({"enabled": false}),
            ),
            (
                "PUT",
                format!("/users/{}", fx.root.id),
                json!({"password": "taken-over-123"}),
            ),
            ("DELETE", format!("/users/{}", fx.root.id), json!({})),
        ];
        for (method, path, payload) in attempts {
            let payload = if method == "DELETE" {
                Vec::new()
            } else {
                body(&payload)
            };
            self.expect(
                fx,
                admin,
                (method, &path, payload),
                &refused,
                "(towards super_admin) as an `admin`",
            )
            .await?;
        }
        // Once users exist, registering must never make an administrator.
        let registered = self
            .call(
                fx,
                None,
                "POST",
                "/auth/register",
                body(&json!({"username": "conf_latecomer", "password": PASSWORD})),
            )
            .await?;
        if registered.status >= 500 {
            return Err(format!(
                "POST /auth/register answered {}",
                registered.status
            ));
        }
        let latecomer = fx
            .read(|conn| users::by_username(conn, "conf_latecomer"))
            .await?;
        if let Some(user) = latecomer {
            if user.role != Role::User {
                return Err(format!("a later self-registration made a `{}`", user.role));
            }
            let id = user.id;
            fx.db()
                .write(move |tx| users::delete(tx, &id))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.unchanged(fx, &before, "an `admin` reaching for super_admin")
            .await
    }

    async fn key_shown_once(&self, fx: &Fixture) -> CheckOutcome {
        let alice = Some(fx.alice.token.as_str());
        let created = self
            .expect(
                fx,
                alice,
                ("POST", "/tokens", body(&json!({"name": "shown-once"}))),
                &[200, 201],
                "(a new key)",
            )
            .await?;
        let key = created
            .body
            .get("key")
            .and_then(Value::as_str)
            .filter(|key| key.len() >= 20)
            .ok_or("POST /tokens did not answer the full key in `key`")?
            .to_owned();
        if let Ok(mut revealed) = self.revealed.lock() {
            revealed.push(key.clone());
        }
        let hash = hash_secret(&key);
        let alice_id = fx.alice.id.clone();
        let stored = fx
            .read(move |conn| api_keys::list_for_user(conn, &alice_id))
            .await?
            .into_iter()
            .find(|row| row.key_hash == hash)
            .ok_or("the answered key is not stored (under its hash) as the caller's key")?;
        let path = format!("/tokens/{}", stored.id);
        for (method, path, payload) in [
            ("GET", "/tokens".to_owned(), Vec::new()),
            ("GET", path.clone(), Vec::new()),
            ("PUT", path.clone(), body(&json!({"name": "renamed"}))),
            ("GET", path.clone(), Vec::new()),
        ] {
            let answer = self
                .expect(fx, alice, (method, &path, payload), &[200], "(own key)")
                .await?;
            if answer.body.to_string().contains(&key) {
                return Err(format!(
                    "{method} {path} answered the key's full text again"
                ));
            }
        }
        Ok(())
    }

    async fn balance_ledger(&self, fx: &Fixture) -> CheckOutcome {
        let admin = Some(fx.admin.token.as_str());
        let path = format!("/users/{}", fx.bob.id);
        let cases: [(Value, Option<i64>, &[u16]); 5] = [
            (
                json!({"balance_nano_usd": "7000000000"}),
                Some(7_000_000_000),
                &[200],
            ),
            (json!({"balance_usd": "1.5"}), Some(1_500_000_000), &[200]),
            (
                json!({"balance_nano_usd": 250_000_000}),
                Some(250_000_000),
                &[200],
            ),
            (json!({"enabled": true}), None, &[200]),
            (json!({"balance_nano_usd": "a lot"}), None, &[400]),
        ];
        for (payload, balance, statuses) in cases {
            let rows_before = fx.ledger_of(&fx.bob.id).await?;
            let user_before = fx.user(&fx.bob.id).await?.ok_or("bob is gone")?;
            self.expect(
                fx,
                admin,
                ("PUT", &path, body(&payload)),
                statuses,
                &format!("with {payload}"),
            )
            .await?;
            let rows = fx.ledger_of(&fx.bob.id).await?;
            let user = fx.user(&fx.bob.id).await?.ok_or("bob is gone")?;
            let new_rows = rows.len().saturating_sub(rows_before.len());
            match balance {
                None if new_rows != 0 || user.balance_nano_usd != user_before.balance_nano_usd => {
                    return Err(format!(
                        "PUT {path} with {payload} wrote {new_rows} ledger rows or moved the balance"
                    ));
                }
                None => {}
                Some(want) => {
                    let newest = rows.first();
                    let fine = new_rows == 1
                        && user.balance_nano_usd == NanoUsd(want)
                        && newest.is_some_and(|row| {
                            row.kind == LedgerKind::AdminAdjustment
                                && row.balance_after_nano_usd == NanoUsd(want)
                        });
                    if !fine {
                        return Err(format!(
                            "PUT {path} with {payload}: {new_rows} new ledger rows and a balance \
                             of {}, expected one admin_adjustment row and {want}",
                            user.balance_nano_usd
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn sessions(&self, fx: &Fixture) -> CheckOutcome {
        let login =
            |password: &str| body(&json!({"username": fx.alice.username, "password": password}));
        self.expect(
            fx,
            None,
            ("POST", "/auth/login", login("wrong-password-1")),
            &[401],
            "(a wrong password)",
        )
        .await?;
        let answer = self
            .expect(
                fx,
                None,
                ("POST", "/auth/login", login(PASSWORD)),
                &[200],
                "",
            )
            .await?;
        let token = answer
            .body
            .get("token")
            .and_then(Value::as_str)
            .ok_or("POST /auth/login answered no `token`")?
            .to_owned();
        let caller = fx
            .caller(&token)
            .await?
            .ok_or("the login's token is not stored as a session (under its hash)")?;
        if caller.user_id != fx.alice.id {
            return Err("the login's session belongs to another user".to_owned());
        }
        let me = self
            .expect(
                fx,
                Some(&token),
                ("GET", "/auth/me", Vec::new()),
                &[200],
                "",
            )
            .await?;
        if me.body.get("id").and_then(Value::as_str) != Some(fx.alice.id.as_str()) {
            return Err("GET /auth/me did not answer the logged-in user".to_owned());
        }
        self.expect(
            fx,
            Some(&token),
            ("POST", "/auth/logout", Vec::new()),
            &[200, 204],
            "",
        )
        .await?;
        if fx.caller(&token).await?.is_some() {
            return Err("POST /auth/logout left the session alive".to_owned());
        }
        // Alice's seeded session is another session: it stays.
        if fx.caller(&fx.alice.token).await?.is_none() {
            return Err("POST /auth/logout ended another session too".to_owned());
        }
        Ok(())
    }

    async fn bad_input(&self, fx: &Fixture) -> CheckOutcome {
        let admin = Some(fx.admin.token.as_str());
        let user = format!("/users/{}", fx.bob.id);
        let huge_name = format!(r#"{{"name": "{}"}}"#, "a".repeat(HUGE_BODY_BYTES - 16));
        let deep = "[".repeat(100_000);
        let long_path = format!("/{}", "a".repeat(64 * 1024));
        let none = Vec::new;
        let raw = |text: &str| text.as_bytes().to_vec();
        let cases: Vec<(Option<&str>, &str, String, Vec<u8>)> = vec![
            (admin, "POST", "/users".to_owned(), raw(r#"{"username":"#)),
            (admin, "PUT", user.clone(), raw("not json")),
            (admin, "POST", "/tokens".to_owned(), raw("[1, 2]")),
            (
                admin,
                "POST",
                "/providers".to_owned(),
                raw(r#"{"name": 1}"#),
            ),
            (None, "POST", "/auth/login".to_owned(), raw("{{{")),
            (
                admin,
                "POST",
                "/providers".to_owned(),
                huge_name.into_bytes(),
            ),
            (admin, "POST", "/tokens".to_owned(), deep.into_bytes()),
            (admin, "PUT", user.clone(), vec![0xff, 0xfe, b'{', 0x00]),
            (
                admin,
                "PUT",
                user.clone(),
                body(&json!({"balance_nano_usd": "9".repeat(5000)})),
            ),
            (admin, "PUT", user.clone(), raw(r#"{"balance_usd": 1e400}"#)),
            (admin, "GET", String::new(), none()),
            (admin, "GET", "/".to_owned(), none()),
            (admin, "GET", "//".to_owned(), none()),
            (admin, "GET", "/users//".to_owned(), none()),
            (admin, "GET", "/users/../tokens".to_owned(), none()),
            (admin, "GET", "/%zz".to_owned(), none()),
            (admin, "GET", "/tokens/%00".to_owned(), none()),
            (admin, "GET", "/legacy/nope".to_owned(), none()),
            (admin, "DELETE", "/legacy/providers/%ff".to_owned(), none()),
            (admin, "GET", long_path, none()),
            (admin, "PATCH", "/users".to_owned(), none()),
            (admin, "BREW", user.clone(), none()),
            (admin, "GET", "/ledger?limit=abc".to_owned(), none()),
            (admin, "GET", "/ledger?limit=0".to_owned(), none()),
            (admin, "GET", "/ledger?limit=%zz".to_owned(), none()),
            // Not ASCII: in the path, the query, and the body's fields.
            (admin, "GET", "/users/用户".to_owned(), none()),
            (admin, "DELETE", "/tokens/🚀".to_owned(), none()),
            (admin, "GET", "/ledger?limit=１０".to_owned(), none()),
            (
                admin,
                "POST",
                "/users".to_owned(),
                body(&json!({"username": "用户名", "password": "密码密码密码密码"})),
            ),
            (
                None,
                "POST",
                "/auth/login".to_owned(),
                body(&json!({"username": "ünïcødé", "password": "\u{0}\u{1b}[31m"})),
            ),
            (
                admin,
                "PUT",
                user.clone(),
                body(&json!({"role": "超级管理员"})),
            ),
        ];
        for (token, method, path, payload) in cases {
            let answer = self.call(fx, token, method, &path, payload).await?;
            if !(400..500).contains(&answer.status) {
                return Err(format!(
                    "{method} {} answered {}, expected a 4xx",
                    shorten(&path),
                    answer.status
                ));
            }
        }
        Ok(())
    }

    async fn secrets_hidden(&self, fx: &Fixture) -> CheckOutcome {
        // Every read a client makes, by every role, so each has its chance to leak.
        let new_channel_key = format!("sk-channel-{}", token()?);
        if let Ok(mut secrets) = fx.secrets.lock() {
            secrets.push(new_channel_key.clone());
        }
        let root = Some(fx.root.token.as_str());
        let provider = format!("/providers/{}", fx.provider_id);
        let create = json!({"name": "conformance-second", "provider_type": "chat_completion",
            "models": {"gpt-4o": {"multiplier": "1.5"}},
            "channels": [{"name": "new", "base_url": "http://127.0.0.1:9",
                "api_key": new_channel_key}]});
        self.expect(
            fx,
            root,
            ("POST", "/providers", body(&create)),
            &[200, 201],
            "",
        )
        .await?;
        self.expect(
            fx,
            root,
            ("PUT", &provider, body(&json!({"max_retries": 1}))),
            &[200],
            "",
        )
        .await?;
        for path in [
            "/providers".to_owned(),
            provider.clone(),
            "/users".to_owned(),
            format!("/users/{}", fx.alice.id),
            format!("/users/{}", fx.root.id),
            "/ledger".to_owned(),
            "/model-metadata".to_owned(),
            format!("/model-metadata/{METADATA_MODEL}"),
            "/models".to_owned(),
            "/legacy/providers".to_owned(),
        ] {
            self.expect(
                fx,
                root,
                ("GET", &path, Vec::new()),
                &[200],
                "as super_admin",
            )
            .await?;
        }
        for actor in [&fx.root, &fx.admin, &fx.alice, &fx.bob] {
            for path in ["/auth/me", "/tokens", "/ledger"] {
                self.expect(
                    fx,
                    Some(&actor.token),
                    ("GET", path, Vec::new()),
                    &[200],
                    "",
                )
                .await?;
            }
        }
        self.call(fx, None, "GET", "/openapi.json", Vec::new())
            .await?;

        let mut forbidden: Vec<(String, &str)> = fx
            .secrets
            .lock()
            .map(|secrets| {
                secrets
                    .iter()
                    .map(|s| (s.clone(), "a channel API key or a key's full text"))
                    .collect()
            })
            .unwrap_or_default();
        let stored = fx
            .read(|conn| {
                let mut hashes = Vec::new();
                for user in users::list(conn)? {
                    for session in sessions::list_for_user(conn, &user.id)? {
                        hashes.push((session.token_hash, "a session token hash"));
                    }
                    hashes.push((user.password_hash, "a password hash"));
                }
                for key in api_keys::list_all(conn)? {
                    hashes.push((key.key_hash, "a stored key hash"));
                }
                Ok(hashes)
            })
            .await?;
        forbidden.extend(stored);
        forbidden.push(("$argon2".to_owned(), "a password hash"));
        let bodies = self
            .bodies
            .lock()
            .map(|bodies| bodies.clone())
            .unwrap_or_default();
        for (secret, what) in &forbidden {
            if let Some(leak) = bodies.iter().find(|body| body.contains(secret.as_str())) {
                return Err(format!("a response holds {what}: {}", shorten(leak)));
            }
        }
        let revealed = self
            .revealed
            .lock()
            .map(|keys| keys.clone())
            .unwrap_or_default();
        for key in &revealed {
            let count = bodies
                .iter()
                .filter(|body| body.contains(key.as_str()))
                .count();
            if count != 1 {
                return Err(format!(
                    "a created key's full text is in {count} responses, not exactly one"
                ));
            }
        }
        Ok(())
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}
