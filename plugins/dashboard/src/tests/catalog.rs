//! Providers, model metadata, the model registry, the ledger and the legacy tables.

use serde_json::{Value, json};

use super::{Harness, Login, assert_error};
use crate::store::{LegacyTable, Store};

fn provider_body() -> Value {
    json!({
        "name": "openai",
        "provider_type": "chat_completion",
        "groups": ["team-a"],
        "models": {
            "gpt-4o": {"redirect": "gpt-4o-2024-08-06", "multiplier": serde_json::from_str::<Value>("1.25").unwrap()},
            "gpt-4o-mini": {"multiplier": "0.5"},
            "o1": {}
        },
        "channels": [
            {"name": "main", "base_url": "https://api.openai.com", "api_key": "sk-upstream-one", "weight": 3},
            {"name": "backup", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-upstream-two", "enabled": false}
        ]
    })
}

fn create_provider(h: &Harness, admin: &Login) -> Value {
    let created = h.call("POST", "/providers", provider_body(), Some(admin));
    assert_eq!(created.status, 201, "{}", created.text);
    created.body
}

#[test]
fn providers_are_created_with_models_and_channels_and_never_show_a_channel_key() {
    let h = Harness::new();
    let owner = h.owner();
    let created = create_provider(&h, &owner);
    assert_eq!(created["provider_type"], "chat_completion");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["max_retries"], -1);
    assert_eq!(created["models"]["gpt-4o"]["multiplier"], "1.25");
    assert_eq!(created["models"]["gpt-4o"]["redirect"], "gpt-4o-2024-08-06");
    assert_eq!(created["models"]["gpt-4o-mini"]["multiplier"], "0.5");
    assert_eq!(created["models"]["o1"]["multiplier"], "1");
    assert_eq!(created["channels"][0]["weight"], 3);
    assert_eq!(created["channels"][1]["enabled"], false);
    let id = created["id"].as_str().unwrap();
    let list = h.get("/providers", &owner);
    let get = h.get(&format!("/providers/{id}"), &owner);
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    for text in [created.to_string(), list.text, get.text] {
        assert!(!text.contains("sk-upstream"), "{text}");
        assert!(!text.contains("api_key"), "{text}");
    }
}

#[test]
fn an_update_keeps_omitted_channel_keys_and_a_new_channel_needs_one() {
    let h = Harness::new();
    let owner = h.owner();
    let created = create_provider(&h, &owner);
    let id = created["id"].as_str().unwrap();
    let main = created["channels"][0]["id"].as_str().unwrap();
    let path = format!("/providers/{id}");
    let new_without_key = h.call(
        "PUT",
        &path,
        json!({"channels": [{"id": main, "name": "main", "base_url": "https://api.openai.com"},
                            {"name": "third", "base_url": "https://x.example", "api_key": ""}]}),
        Some(&owner),
    );
    assert_error(&new_without_key, 400, Some("channels[1].api_key"));
    let unknown = h.call(
        "PUT",
        &path,
        json!({"channels": [{"id": "c999", "name": "x", "base_url": "https://x.example"}]}),
        Some(&owner),
    );
    assert_error(&unknown, 400, Some("channels[0].id"));
    let updated = h.call(
        "PUT",
        &path,
        json!({"name": "renamed", "channels": [
            {"id": main, "name": "main", "base_url": "https://api.openai.com", "api_key": ""},
            {"name": "third", "base_url": "https://x.example", "api_key": "sk-upstream-three"}
        ]}),
        Some(&owner),
    );
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["name"], "renamed");
    assert_eq!(updated.body["channels"].as_array().unwrap().len(), 2);
    // Partial: the models stayed.
    assert_eq!(updated.body["models"]["gpt-4o"]["multiplier"], "1.25");
    let keys: Vec<String> = h.store.state.borrow().providers[0]
        .1
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(keys, ["sk-upstream-one", "sk-upstream-three"]);
    // A body with neither models nor channels keeps both, keys included.
    let toggled = h.call("PUT", &path, json!({"enabled": false}), Some(&owner));
    assert_eq!(toggled.body["enabled"], false);
    let keys: Vec<String> = h.store.state.borrow().providers[0]
        .1
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(keys, ["sk-upstream-one", "sk-upstream-three"]);
    assert_error(
        &h.call("PUT", "/providers/nope", json!({}), Some(&owner)),
        404,
        None,
    );
}

#[test]
fn provider_fields_are_validated_naming_the_field() {
    let h = Harness::new();
    let owner = h.owner();
    let with = |change: Value| {
        let mut body = provider_body();
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (body, param) in [
        (with(json!({"provider_type": "openai"})), "provider_type"),
        (with(json!({"name": ""})), "name"),
        (with(json!({"max_retries": -2})), "max_retries"),
        (with(json!({"groups": [""]})), "groups[0]"),
        (
            with(json!({"models": {"m": {"multiplier": "0"}}})),
            "models.m.multiplier",
        ),
        (
            with(json!({"models": {"m": {"multiplier": "1.0000000001"}}})),
            "models.m.multiplier",
        ),
        (
            with(json!({"models": {"m": {"multiplier": true}}})),
            "models.m.multiplier",
        ),
        (
            with(json!({"models": {"m": {"redirect": 1}}})),
            "models.m.redirect",
        ),
        (with(json!({"models": ["m"]})), "models"),
        (
            with(json!({"channels": [{"name": "c", "base_url": "ftp://x", "api_key": "k"}]})),
            "channels[0].base_url",
        ),
        (
            with(json!({"channels": [{"name": "c", "base_url": "https://", "api_key": "k"}]})),
            "channels[0].base_url",
        ),
        (
            with(
                json!({"channels": [{"name": "c", "base_url": "https://x", "api_key": "k", "weight": -1}]}),
            ),
            "channels[0].weight",
        ),
        (
            with(json!({"channels": [{"base_url": "https://x", "api_key": "k"}]})),
            "channels[0].name",
        ),
        (
            with(json!({"channels": [{"name": "c", "base_url": "https://x"}]})),
            "channels[0].api_key",
        ),
        (
            with(
                json!({"channels": [{"name": "c", "base_url": "https://x", "api_key": "sk-a\nX-Evil: 1"}]}),
            ),
            "channels[0].api_key",
        ),
        (
            with(
                json!({"channels": [{"name": "c", "base_url": "https://x", "api_key": "sk-clé"}]}),
            ),
            "channels[0].api_key",
        ),
        (
            with(
                json!({"channels": [{"name": "c", "base_url": "https://x", "api_key": "k", "id": "c1"}]}),
            ),
            "channels[0].id",
        ),
        (json!({"provider_type": "grok"}), "name"),
        (json!({"name": "x"}), "provider_type"),
    ] {
        assert_error(
            &h.call("POST", "/providers", body, Some(&owner)),
            400,
            Some(param),
        );
    }
    assert!(h.store.state.borrow().providers.is_empty());
}

#[test]
fn providers_are_reordered_and_deleted_by_admins_only() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    let first = create_provider(&h, &owner)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create_provider(&h, &owner)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = h.call(
        "POST",
        "/providers/reorder",
        json!({"provider_ids": [second, first]}),
        Some(&owner),
    );
    assert_eq!(order.status, 200, "{}", order.text);
    assert_eq!(order.body[0]["id"], second.as_str());
    assert_eq!(order.body[0]["priority"], 0);
    let twice = h.call(
        "POST",
        "/providers/reorder",
        json!({"provider_ids": [first, first]}),
        Some(&owner),
    );
    assert_error(&twice, 400, Some("provider_ids"));
    let missing = h.call(
        "POST",
        "/providers/reorder",
        json!({"provider_ids": ["nope"]}),
        Some(&owner),
    );
    assert_eq!(missing.status, 404);
    for (method, path) in [
        ("GET", "/providers".to_owned()),
        ("POST", "/providers".to_owned()),
        ("GET", format!("/providers/{first}")),
        ("PUT", format!("/providers/{first}")),
        ("DELETE", format!("/providers/{first}")),
        ("POST", "/providers/reorder".to_owned()),
    ] {
        assert_error(
            &h.call(method, &path, provider_body(), Some(&user)),
            403,
            None,
        );
    }
    let gone = h.call(
        "DELETE",
        &format!("/providers/{first}"),
        Value::Null,
        Some(&owner),
    );
    assert_eq!(gone.status, 200, "{}", gone.text);
    assert_error(
        &h.call(
            "DELETE",
            &format!("/providers/{first}"),
            Value::Null,
            Some(&owner),
        ),
        404,
        None,
    );
    assert_eq!(h.store.state.borrow().providers.len(), 1);
}

#[test]
fn model_metadata_takes_ids_with_slashes_and_prices_as_strings() {
    let h = Harness::new();
    let owner = h.owner();
    let body = json!({"input_cost_per_token_nano": 2500, "output_cost_per_token_nano": "10000", "mode": "chat", "max_tokens": 128000, "raw_json": {"a": 1}});
    let created = h.call(
        "PUT",
        "/model-metadata/openai/gpt-4o",
        body.clone(),
        Some(&owner),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["model_id"], "openai/gpt-4o");
    assert_eq!(created.body["input_cost_per_token_nano"], "2500");
    assert_eq!(created.body["output_cost_per_token_nano"], "10000");
    assert_eq!(
        created.body["cache_read_input_cost_per_token_nano"],
        Value::Null
    );
    assert_eq!(created.body["source"], "manual");
    assert_eq!(created.body["raw_json"], json!({"a": 1}));
    let replaced = h.call("PUT", "/model-metadata/openai%2Fgpt-4o", body, Some(&owner));
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(
        h.get("/model-metadata/openai/gpt-4o", &owner).body["max_tokens"],
        128000
    );
    assert_eq!(
        h.get("/model-metadata", &owner)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for (body, param) in [
        (
            json!({"input_cost_per_token_nano": "1.5"}),
            "input_cost_per_token_nano",
        ),
        (
            json!({"input_cost_per_token_nano": -1}),
            "input_cost_per_token_nano",
        ),
        (json!({"max_tokens": "many"}), "max_tokens"),
        (json!({"model_id": "other"}), "model_id"),
    ] {
        assert_error(
            &h.call("PUT", "/model-metadata/openai/gpt-4o", body, Some(&owner)),
            400,
            Some(param),
        );
    }
    let gone = h.call(
        "DELETE",
        "/model-metadata/openai/gpt-4o",
        Value::Null,
        Some(&owner),
    );
    assert_eq!(gone.status, 200);
    assert_error(&h.get("/model-metadata/openai/gpt-4o", &owner), 404, None);
    let user = h.user(&owner, "someone", "user");
    assert_error(&h.get("/model-metadata", &user), 403, None);
}

#[test]
fn the_model_registry_checks_its_provider_and_duplicates() {
    let h = Harness::new();
    let owner = h.owner();
    let provider = create_provider(&h, &owner)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let no_provider = h.call(
        "POST",
        "/models",
        json!({"logical_model": "gpt-4o", "provider_id": "nope"}),
        Some(&owner),
    );
    assert_error(&no_provider, 400, Some("provider_id"));
    assert_error(
        &h.call(
            "POST",
            "/models",
            json!({"provider_id": provider}),
            Some(&owner),
        ),
        400,
        Some("logical_model"),
    );
    let body = json!({"logical_model": "gpt-4o", "provider_id": provider, "capabilities": {"vision": true}});
    let created = h.call("POST", "/models", body.clone(), Some(&owner));
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["upstream_model"], "gpt-4o");
    assert_eq!(created.body["capabilities"], json!({"vision": true}));
    assert_error(&h.call("POST", "/models", body, Some(&owner)), 409, None);
    let path = format!("/models/{}", created.body["id"].as_str().unwrap());
    let updated = h.call(
        "PUT",
        &path,
        json!({"priority": 5, "enabled": false}),
        Some(&owner),
    );
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["priority"], 5);
    assert_eq!(updated.body["logical_model"], "gpt-4o");
    assert_error(
        &h.call("PUT", &path, json!({"capabilities": []}), Some(&owner)),
        400,
        Some("capabilities"),
    );
    assert_eq!(h.get("/models", &owner).body.as_array().unwrap().len(), 1);
    assert_eq!(
        h.call("DELETE", &path, Value::Null, Some(&owner)).status,
        200
    );
    assert_error(&h.get(&path, &owner), 404, None);
}

#[test]
fn a_user_reads_only_their_own_ledger_and_admins_anyones() {
    let h = Harness::new();
    let owner = h.owner();
    let alice = h.user(&owner, "alice", "user");
    let bob = h.user(&owner, "bob", "user");
    for (who, amount) in [(&alice, "1"), (&bob, "2"), (&alice, "3")] {
        let answer = h.call(
            "PUT",
            &format!("/users/{}", who.user_id),
            json!({"balance_usd": amount}),
            Some(&owner),
        );
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let mine = h.get("/ledger", &alice);
    assert_eq!(mine.status, 200, "{}", mine.text);
    let rows = mine.body.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["balance_after_nano_usd"], "3000000000");
    assert_eq!(rows[0]["delta_nano_usd"], "2000000000");
    assert_eq!(rows[0]["kind"], "admin_adjustment");
    assert_eq!(rows[0]["meta"]["source"], "dashboard");
    assert_eq!(
        h.get(&format!("/ledger?user_id={}", alice.user_id), &alice)
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_error(
        &h.get(&format!("/ledger?user_id={}", bob.user_id), &alice),
        403,
        Some("user_id"),
    );
    assert_eq!(
        h.get(&format!("/ledger?user_id={}", bob.user_id), &owner)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let blank = h.get("/ledger?user_id=&limit=&before=", &alice);
    assert_eq!(blank.body.as_array().unwrap().len(), 2, "{}", blank.text);
    let all = h.get("/ledger?limit=2", &owner);
    assert_eq!(all.body.as_array().unwrap().len(), 2);
    let last = all.body[1]["id"].as_str().unwrap();
    let older = h.get(&format!("/ledger?before={last}"), &owner);
    assert_eq!(older.body.as_array().unwrap().len(), 1);
    for query in ["limit=0", "limit=1001", "limit=ten", "limit=-1"] {
        assert_error(
            &h.get(&format!("/ledger?{query}"), &owner),
            400,
            Some("limit"),
        );
    }
    assert_error(&h.call("GET", "/ledger", Value::Null, None), 401, None);
}

#[test]
fn legacy_rows_are_listed_and_deleted_by_admins() {
    let h = Harness::new();
    let owner = h.owner();
    h.store.state.borrow_mut().legacy.push((
        LegacyTable::ModelMappings,
        "7".into(),
        r#"{"id":7,"from":"a"}"#.into(),
    ));
    let rows = h.get("/legacy/model_mappings", &owner);
    assert_eq!(rows.body, json!([{"id": 7, "from": "a"}]));
    assert_eq!(h.get("/legacy/providers", &owner).body, json!([]));
    assert_error(&h.get("/legacy/users", &owner), 404, Some("table"));
    let user = h.user(&owner, "someone", "user");
    assert_error(&h.get("/legacy/providers", &user), 403, None);
    assert_error(
        &h.call(
            "DELETE",
            "/legacy/model_mappings/7",
            Value::Null,
            Some(&user),
        ),
        403,
        None,
    );
    assert_eq!(
        h.call(
            "DELETE",
            "/legacy/model_mappings/7",
            Value::Null,
            Some(&owner)
        )
        .status,
        200
    );
    assert_error(
        &h.call(
            "DELETE",
            "/legacy/model_mappings/7",
            Value::Null,
            Some(&owner),
        ),
        404,
        None,
    );
    assert!(
        h.store
            .list_legacy(LegacyTable::ModelMappings)
            .unwrap()
            .is_empty()
    );
}
