//! API keys: shown once, never another user's, validated field by field.

use serde_json::{Value, json};

use super::{Harness, assert_error};

#[test]
fn a_key_is_shown_once_and_stored_as_prefix_and_hash() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    let created = h.call("POST", "/tokens", json!({"name": "laptop"}), Some(&user));
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-") && key.len() > 40, "{key}");
    assert_eq!(created.body["key_prefix"], &key[..12]);
    assert_eq!(created.body["user_id"], user.user_id.as_str());
    assert_eq!(created.body["quota_unlimited"], true);
    assert_eq!(created.body["model_limits"], json!([]));
    assert_eq!(created.body["max_multiplier"], Value::Null);
    let id = created.body["id"].as_str().unwrap().to_owned();
    {
        let state = h.store.state.borrow();
        assert_eq!(state.keys[0].1, format!("sha:{key}"));
    }
    let get = h.get(&format!("/tokens/{id}"), &user);
    let list = h.get("/tokens", &user);
    let put = h.call(
        "PUT",
        &format!("/tokens/{id}"),
        json!({"name": "desk"}),
        Some(&user),
    );
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    for answer in [&get, &list, &put] {
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(!answer.text.contains(&key), "{}", answer.text);
        assert!(!answer.text.contains("sha:"), "{}", answer.text);
        assert!(!answer.text.contains("\"key\""), "{}", answer.text);
    }
    assert_eq!(put.body["name"], "desk");
}

#[test]
fn another_users_key_is_404_everywhere() {
    let h = Harness::new();
    let owner = h.owner();
    let alice = h.user(&owner, "alice", "user");
    let bob = h.user(&owner, "bob", "user");
    let created = h.call("POST", "/tokens", json!({"name": "alice's"}), Some(&alice));
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/tokens/{id}");
    // Bob, and even the super_admin: /tokens is about one's own keys.
    for who in [&bob, &owner] {
        assert_error(&h.get(&path, who), 404, None);
        assert_error(
            &h.call("PUT", &path, json!({"enabled": false}), Some(who)),
            404,
            None,
        );
        assert_error(&h.call("DELETE", &path, Value::Null, Some(who)), 404, None);
        let batch = h.call(
            "POST",
            "/tokens/batch-delete",
            json!({"ids": [id]}),
            Some(who),
        );
        assert_eq!(batch.body["deleted"], 0, "{}", batch.text);
        assert_eq!(h.get("/tokens", who).body, json!([]));
    }
    assert_error(&h.get("/tokens/missing", &bob), 404, None);
    let still = h.get(&path, &alice);
    assert_eq!(still.status, 200);
    assert_eq!(still.body["enabled"], true);
    let mine = h.call("POST", "/tokens", json!({"name": "second"}), Some(&alice));
    let second = mine.body["id"].as_str().unwrap();
    let batch = h.call(
        "POST",
        "/tokens/batch-delete",
        json!({"ids": [id, second, "missing"]}),
        Some(&alice),
    );
    assert_eq!(batch.body["deleted"], 2, "{}", batch.text);
    assert_error(
        &h.call("DELETE", &path, Value::Null, Some(&alice)),
        404,
        None,
    );
    assert_error(&h.call("GET", "/tokens", Value::Null, None), 401, None);
}

#[test]
fn key_settings_are_validated_naming_the_field() {
    let h = Harness::new();
    let owner = h.owner();
    for (body, param) in [
        (json!({}), "name"),
        (json!({"name": "  "}), "name"),
        (
            json!({"name": "k", "ip_whitelist": ["10.0.0.1", "10.0.0.0/33"]}),
            "ip_whitelist[1]",
        ),
        (
            json!({"name": "k", "ip_whitelist": ["not-an-ip"]}),
            "ip_whitelist[0]",
        ),
        (
            json!({"name": "k", "ip_whitelist": "10.0.0.1"}),
            "ip_whitelist",
        ),
        (
            json!({"name": "k", "max_multiplier": "1.0000000001"}),
            "max_multiplier",
        ),
        (json!({"name": "k", "max_multiplier": 0}), "max_multiplier"),
        (
            json!({"name": "k", "max_multiplier": "cheap"}),
            "max_multiplier",
        ),
        (
            json!({"name": "k", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "expires_in_days": "7"}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "model_limits": ["gpt-4o", 5]}),
            "model_limits[1]",
        ),
        (
            json!({"name": "k", "model_limits_enabled": "yes"}),
            "model_limits_enabled",
        ),
        (json!({"name": "k", "group": 3}), "group"),
        (json!({"name": "k", "transforms": {}}), "transforms"),
    ] {
        let answer = h.call("POST", "/tokens", body.clone(), Some(&owner));
        assert_error(&answer, 400, Some(param));
    }
    assert!(h.store.state.borrow().keys.is_empty());
}

#[test]
fn key_settings_are_stored_exactly_and_updates_are_partial() {
    let h = Harness::new();
    let owner = h.owner();
    let number: Value = serde_json::from_str("1.1").unwrap();
    let created = h.call(
        "POST",
        "/tokens",
        json!({
            "name": "limited",
            "expires_in_days": 2,
            "model_limits_enabled": true,
            "model_limits": ["gpt-4o"],
            "ip_whitelist": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "::1"],
            "group": "team-a",
            "max_multiplier": number,
        }),
        Some(&owner),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["max_multiplier"], "1.1");
    assert_eq!(created.body["expires_at"], "2026-03-03T12:00:00.000Z");
    assert_eq!(created.body["group"], "team-a");
    assert_eq!(
        h.store.state.borrow().keys[0].0.max_multiplier,
        Some(1_100_000_000)
    );
    let path = format!("/tokens/{}", created.body["id"].as_str().unwrap());
    let updated = h.call(
        "PUT",
        &path,
        json!({"max_multiplier": null, "group": null, "enabled": false}),
        Some(&owner),
    );
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["max_multiplier"], Value::Null);
    assert_eq!(updated.body["group"], Value::Null);
    assert_eq!(updated.body["enabled"], false);
    assert_eq!(updated.body["name"], "limited");
    assert_eq!(updated.body["model_limits"], json!(["gpt-4o"]));
    assert_eq!(updated.body["ip_whitelist"].as_array().unwrap().len(), 4);
    assert_eq!(updated.body["expires_at"], "2026-03-03T12:00:00.000Z");
    let cleared = h.call("PUT", &path, json!({"expires_in_days": null}), Some(&owner));
    assert_eq!(cleared.body["expires_at"], Value::Null);
    let bad = h.call("PUT", &path, json!({"max_multiplier": "-2"}), Some(&owner));
    assert_error(&bad, 400, Some("max_multiplier"));
}

#[test]
fn batch_delete_validates_ids() {
    let h = Harness::new();
    let owner = h.owner();
    for body in [json!({}), json!({"ids": "k1"}), json!({"ids": [1]})] {
        let answer = h.call("POST", "/tokens/batch-delete", body, Some(&owner));
        assert_eq!(answer.status, 400, "{}", answer.text);
        assert!(
            answer.body["error"]["param"]
                .as_str()
                .unwrap()
                .starts_with("ids")
        );
    }
    let empty = h.call(
        "POST",
        "/tokens/batch-delete",
        json!({"ids": []}),
        Some(&owner),
    );
    assert_eq!(empty.body, json!({"deleted": 0}));
}
