//! Register, login, logout, me, and the users resource's role rules.

use serde_json::{Value, json};

use super::{Harness, Login, assert_error};
use crate::store::{LedgerKind, Role, Store};

#[test]
fn the_first_user_becomes_super_admin_and_later_self_registration_is_refused() {
    let h = Harness::new();
    let owner = h.owner();
    assert_eq!(h.role_of(&owner.user_id), Role::SuperAdmin);
    let me = h.get("/auth/me", &owner);
    assert_eq!(me.status, 200);
    assert_eq!(me.body["role"], "super_admin");
    assert_eq!(me.body["username"], "owner");
    let again = h.call(
        "POST",
        "/auth/register",
        json!({"username": "intruder", "password": "long-enough"}),
        None,
    );
    assert_error(&again, 403, None);
    assert_eq!(h.store.count_users().unwrap(), 1);
}

#[test]
fn register_and_login_answer_a_token_and_an_http_only_cookie() {
    let h = Harness::new();
    let answer = h.call(
        "POST",
        "/auth/register",
        json!({"username": "owner", "password": "owner-password"}),
        None,
    );
    let token = answer.body["token"].as_str().unwrap();
    let cookie = &answer
        .headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .unwrap()
        .1;
    assert!(
        cookie.starts_with(&format!("monoize_session={token};")),
        "{cookie}"
    );
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/dashboard",
        "Max-Age=604800",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    // Only the hash of the token is stored.
    let state = h.store.state.borrow();
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.sessions[0].2, format!("sha:{token}"));
    assert_eq!(state.sessions[0].3, super::fake::NOW_MS + 604_800_000);
}

#[test]
fn usernames_and_passwords_are_validated_naming_the_field() {
    let h = Harness::new();
    for (body, param) in [
        (
            json!({"username": "ab", "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "a".repeat(23), "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "bad name", "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "émile", "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "okname", "password": "short"}),
            "password",
        ),
        (json!({"password": "long-enough"}), "username"),
        (json!({"username": "okname"}), "password"),
        (
            json!({"username": 12, "password": "long-enough"}),
            "username",
        ),
    ] {
        let answer = h.call("POST", "/auth/register", body, None);
        assert_error(&answer, 400, Some(param));
    }
    assert_eq!(h.store.count_users().unwrap(), 0);
    let ok = h.call(
        "POST",
        "/auth/register",
        json!({"username": "A_b_3", "password": "12345678"}),
        None,
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
}

#[test]
fn every_login_failure_is_the_same_401() {
    let h = Harness::new();
    let owner = h.owner();
    h.user(&owner, "disabled", "user");
    let users = h.get("/users", &owner);
    let disabled_id = users.body.as_array().unwrap()[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = h.call(
        "PUT",
        &format!("/users/{disabled_id}"),
        json!({"enabled": false}),
        Some(&owner),
    );
    assert_eq!(put.status, 200, "{}", put.text);
    let mut bodies = Vec::new();
    for (username, password) in [
        ("owner", "wrong-password"),
        ("nobody", "owner-password"),
        ("disabled", "password-123"),
    ] {
        let answer = h.call(
            "POST",
            "/auth/login",
            json!({"username": username, "password": password}),
            None,
        );
        assert_error(&answer, 401, None);
        bodies.push(answer.text);
    }
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "{bodies:?}"
    );
}

#[test]
fn login_records_the_login_and_logout_kills_the_session() {
    let h = Harness::new();
    h.owner();
    let session = h.login("owner", "owner-password");
    assert!(h.get("/auth/me", &session).body["last_login_at"].is_string());
    let out = h.call("POST", "/auth/logout", Value::Null, Some(&session));
    assert_eq!(out.status, 200, "{}", out.text);
    let cookie = &out
        .headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .unwrap()
        .1;
    assert!(cookie.contains("Max-Age=0"));
    assert_error(&h.get("/auth/me", &session), 401, None);
    assert_error(
        &h.call("POST", "/auth/logout", Value::Null, Some(&session)),
        401,
        None,
    );
    assert_error(&h.call("GET", "/auth/me", Value::Null, None), 401, None);
}

#[test]
fn a_disabled_or_deleted_user_is_logged_out() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    assert_eq!(h.get("/auth/me", &user).status, 200);
    h.call(
        "PUT",
        &format!("/users/{}", user.user_id),
        json!({"enabled": false}),
        Some(&owner),
    );
    assert_error(&h.get("/auth/me", &user), 401, None);
    let admin = h.user(&owner, "admin1", "admin");
    h.call(
        "DELETE",
        &format!("/users/{}", admin.user_id),
        Value::Null,
        Some(&owner),
    );
    assert_error(&h.get("/users", &admin), 401, None);
}

#[test]
fn a_user_cannot_reach_the_users_resource() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    let target = format!("/users/{}", owner.user_id);
    assert_error(&h.get("/users", &user), 403, None);
    assert_error(&h.get(&target, &user), 403, None);
    assert_error(
        &h.call(
            "POST",
            "/users",
            json!({"username": "x_y_z", "password": "12345678"}),
            Some(&user),
        ),
        403,
        None,
    );
    assert_error(
        &h.call(
            "PUT",
            &format!("/users/{}", user.user_id),
            json!({"balance_usd": "100"}),
            Some(&user),
        ),
        403,
        None,
    );
    assert_error(
        &h.call("DELETE", &target, Value::Null, Some(&user)),
        403,
        None,
    );
    assert_error(&h.call("GET", "/users", Value::Null, None), 401, None);
    assert!(h.store.state.borrow().ledger.is_empty());
}

#[test]
fn an_admin_cannot_grant_above_their_role_nor_touch_a_super_admin() {
    let h = Harness::new();
    let owner = h.owner();
    let admin = h.user(&owner, "admin1", "admin");
    let user = h.user(&admin, "user1", "user");
    let create = h.call(
        "POST",
        "/users",
        json!({"username": "boss2", "password": "12345678", "role": "super_admin"}),
        Some(&admin),
    );
    assert_error(&create, 403, Some("role"));
    let raise = h.call(
        "PUT",
        &format!("/users/{}", user.user_id),
        json!({"role": "super_admin"}),
        Some(&admin),
    );
    assert_error(&raise, 403, Some("role"));
    assert_eq!(h.role_of(&user.user_id), Role::User);
    let owner_path = format!("/users/{}", owner.user_id);
    assert_error(
        &h.call("PUT", &owner_path, json!({"enabled": false}), Some(&admin)),
        403,
        None,
    );
    assert_error(
        &h.call(
            "PUT",
            &owner_path,
            json!({"password": "new-password"}),
            Some(&admin),
        ),
        403,
        None,
    );
    assert_error(
        &h.call("DELETE", &owner_path, Value::Null, Some(&admin)),
        403,
        None,
    );
    // An admin may make another admin, and manage plain users.
    let promote = h.call(
        "PUT",
        &format!("/users/{}", user.user_id),
        json!({"role": "admin"}),
        Some(&admin),
    );
    assert_eq!(promote.status, 200, "{}", promote.text);
    assert_eq!(h.role_of(&user.user_id), Role::Admin);
    // A super_admin may make another super_admin.
    let up = h.call(
        "PUT",
        &format!("/users/{}", admin.user_id),
        json!({"role": "super_admin"}),
        Some(&owner),
    );
    assert_eq!(up.status, 200, "{}", up.text);
}

#[test]
fn the_last_super_admin_cannot_be_demoted_disabled_or_deleted() {
    let h = Harness::new();
    let owner = h.owner();
    let path = format!("/users/{}", owner.user_id);
    for body in [json!({"role": "admin"}), json!({"enabled": false})] {
        let answer = h.call("PUT", &path, body, Some(&owner));
        assert_error(&answer, 409, None);
        assert_eq!(answer.body["error"]["code"], "last_super_admin");
    }
    assert_error(
        &h.call("DELETE", &path, Value::Null, Some(&owner)),
        409,
        None,
    );
    assert_eq!(h.role_of(&owner.user_id), Role::SuperAdmin);
    // With a second super_admin, the first may step down.
    let second = h.user(&owner, "second", "super_admin");
    let down = h.call("PUT", &path, json!({"role": "admin"}), Some(&owner));
    assert_eq!(down.status, 200, "{}", down.text);
    let last = h.call(
        "DELETE",
        &format!("/users/{}", second.user_id),
        Value::Null,
        Some(&second),
    );
    assert_error(&last, 409, None);
}

#[test]
fn a_balance_change_writes_exactly_one_admin_adjustment() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    let path = format!("/users/{}", user.user_id);
    let answer = h.call(
        "PUT",
        &path,
        json!({"balance_usd": "12.5", "reason": "top-up"}),
        Some(&owner),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["balance_nano_usd"], "12500000000");
    assert_eq!(answer.body["balance_usd"], "12.5");
    {
        let state = h.store.state.borrow();
        assert_eq!(state.ledger.len(), 1);
        let row = &state.ledger[0];
        assert!(matches!(row.kind, LedgerKind::AdminAdjustment));
        assert_eq!(
            (row.delta, row.balance_after),
            (12_500_000_000, 12_500_000_000)
        );
        let meta: Value = serde_json::from_str(&row.meta_json).unwrap();
        assert_eq!(meta["by_user_id"], owner.user_id.as_str());
        assert_eq!(meta["reason"], "top-up");
    }
    let answer = h.call("PUT", &path, json!({"balance_nano_usd": 1}), Some(&owner));
    assert_eq!(answer.body["balance_usd"], "0.000000001");
    assert_eq!(h.store.state.borrow().ledger.len(), 2);
    assert!(
        h.store.state.borrow().infos.iter().any(
            |line| line == &format!("owner changed balance of user someone ({})", user.user_id)
        ),
        "{:?}",
        h.store.state.borrow().infos
    );
    // Changes without a balance write no ledger row.
    h.call(
        "PUT",
        &path,
        json!({"balance_unlimited": true}),
        Some(&owner),
    );
    assert_eq!(h.store.state.borrow().ledger.len(), 2);
    for (body, param) in [
        (json!({"balance_usd": "0.0000000001"}), "balance_usd"),
        (json!({"balance_usd": "ten"}), "balance_usd"),
        (
            json!({"balance_usd": 1.5, "balance_nano_usd": "1"}),
            "balance_usd",
        ),
        (json!({"balance_nano_usd": "1.5"}), "balance_nano_usd"),
        (json!({"role": "root"}), "role"),
        (json!({"enabled": 1}), "enabled"),
        (json!({"password": "short"}), "password"),
    ] {
        assert_error(&h.call("PUT", &path, body, Some(&owner)), 400, Some(param));
    }
    assert_eq!(h.store.state.borrow().ledger.len(), 2);
}

#[test]
fn users_are_created_with_an_optional_balance_and_never_show_a_hash() {
    let h = Harness::new();
    let owner = h.owner();
    let created = h.call(
        "POST",
        "/users",
        json!({"username": "funded", "password": "password-123", "balance_usd": 3}),
        Some(&owner),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["balance_nano_usd"], "3000000000");
    assert_eq!(created.body["role"], "user");
    let keys: Vec<&String> = created.body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "balance_nano_usd",
            "balance_unlimited",
            "balance_usd",
            "created_at",
            "enabled",
            "id",
            "last_login_at",
            "role",
            "username"
        ]
    );
    let duplicate = h.call(
        "POST",
        "/users",
        json!({"username": "funded", "password": "password-123"}),
        Some(&owner),
    );
    assert_error(&duplicate, 409, Some("username"));
    let list = h.get("/users", &owner);
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    for text in [
        &created.text,
        &list.text,
        &h.get(&format!("/users/{}", owner.user_id), &owner).text,
    ] {
        assert!(!text.contains("hash:"), "{text}");
        assert!(!text.contains("password"), "{text}");
    }
    assert_error(&h.get("/users/nope", &owner), 404, None);
    let login: Login = h.login("funded", "password-123");
    assert_eq!(h.get("/auth/me", &login).body["balance_usd"], "3");
}
