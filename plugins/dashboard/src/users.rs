//! `/users` (admin): list, get, create, update, delete.
//!
//! Role rules, on top of the route's `admin`:
//! - nobody gives a role above their own (an `admin` cannot make a `super_admin`);
//! - only a `super_admin` changes or deletes a `super_admin`;
//! - nobody demotes, disables or deletes the last enabled `super_admin` (409
//!   `last_super_admin`).
//!
//! A balance is set with `balance_nano_usd` (whole nano-USD) or `balance_usd` (exact decimal,
//! at most nine fractional digits), both as a JSON string or number; the change goes through
//! `billing-store.adjust` (`set`), which writes exactly one `admin_adjustment` ledger row. An
//! optional `reason` is kept in that row's meta. Reads never carry a password hash.

use serde_json::{Value, json};

use crate::auth::{check_password, check_username};
use crate::http::{self, ApiError, Body};
use crate::money;
use crate::router::{Ctx, Principal, rank};
use crate::store::{Adjustment, HttpResponse, NewUser, Role, User, UserPatch};

/// A user as every read answers it.
pub fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "role": role_name(user.role),
        "enabled": user.enabled,
        "balance_nano_usd": user.balance.to_string(),
        "balance_usd": money::format_usd(user.balance),
        "balance_unlimited": user.balance_unlimited,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    })
}

/// `super_admin`, `admin`, `user`.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::SuperAdmin => "super_admin",
        Role::Admin => "admin",
        Role::User => "user",
    }
}

/// A role from its name.
fn role(value: &Value, param: &str) -> Result<Role, ApiError> {
    match value.as_str() {
        Some("super_admin") => Ok(Role::SuperAdmin),
        Some("admin") => Ok(Role::Admin),
        Some("user") => Ok(Role::User),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be one of super_admin, admin, user"),
        )),
    }
}

/// The balance a body sets, from `balance_nano_usd` or `balance_usd` (both only if equal).
fn balance(body: &Body) -> Result<Option<i64>, ApiError> {
    let nano = body.optional("balance_nano_usd", money::nano_usd)?;
    let usd = body.optional("balance_usd", money::usd)?;
    match (nano, usd) {
        (Some(nano), Some(usd)) if nano != usd => Err(ApiError::invalid(
            "balance_usd",
            "`balance_usd` and `balance_nano_usd` disagree; send one of them",
        )),
        (Some(amount), _) | (None, Some(amount)) => Ok(Some(amount)),
        (None, None) => Ok(None),
    }
}

/// 403 unless the caller may give `role`.
fn check_grant(caller: &User, role: Role) -> Result<(), ApiError> {
    if rank(role) > rank(caller.role) {
        return Err(ApiError::forbidden("you cannot give a role above your own").with_param("role"));
    }
    Ok(())
}

/// 403 unless the caller may change or delete `target`.
fn check_target(caller: &User, target: &User) -> Result<(), ApiError> {
    if target.role == Role::SuperAdmin && caller.role != Role::SuperAdmin {
        return Err(ApiError::forbidden(
            "only a super_admin can change or delete a super_admin",
        ));
    }
    Ok(())
}

/// 409 when `target` is the last enabled `super_admin` and would stop being one.
fn check_last_super_admin(
    ctx: &Ctx<'_>,
    target: &User,
    stays_enabled_super_admin: bool,
) -> Result<(), ApiError> {
    if target.role != Role::SuperAdmin || !target.enabled || stays_enabled_super_admin {
        return Ok(());
    }
    let users = ctx.store.list_users().map_err(|e| ctx.store_error(e))?;
    let others = users
        .iter()
        .filter(|user| user.id != target.id && user.role == Role::SuperAdmin && user.enabled)
        .count();
    if others == 0 {
        return Err(ApiError::conflict(
            "last_super_admin",
            "this is the last enabled super_admin: make another one first",
        ));
    }
    Ok(())
}

/// Sets `user_id`'s balance through `billing-store.adjust`, one ledger row.
fn set_balance(
    ctx: &Ctx<'_>,
    caller: &Principal,
    user_id: &str,
    amount: i64,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let meta = json!({
        "source": "dashboard",
        "by_user_id": caller.user.id,
        "by_username": caller.user.username,
        "reason": reason,
    });
    ctx.store
        .adjust(user_id, Adjustment::Set(amount), &meta.to_string())
        .map_err(|e| ctx.store_error(e))?;
    Ok(())
}

/// The user `id`, or 404.
fn find(ctx: &Ctx<'_>, id: &str) -> Result<User, ApiError> {
    ctx.store
        .get_user(id)
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

/// `GET /users`.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let users = ctx.store.list_users().map_err(|e| ctx.store_error(e))?;
    http::ok(Value::Array(users.iter().map(user_json).collect()))
}

/// `GET /users/{id}`.
pub fn get(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    http::ok(user_json(&find(ctx, ctx.param("id"))?))
}

/// `POST /users` `{username, password, role?, enabled?, balance_unlimited?, balance_nano_usd? |
/// balance_usd?, reason?}` → 201.
pub fn create(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let body = ctx.body()?;
    let username = body.required("username", http::string)?;
    check_username(&username, "username")?;
    let password = body.required("password", http::string)?;
    check_password(&password, "password")?;
    let role = body.optional("role", role)?.unwrap_or(Role::User);
    let enabled = body.optional("enabled", http::boolean)?.unwrap_or(true);
    let unlimited = body
        .optional("balance_unlimited", http::boolean)?
        .unwrap_or(false);
    let balance = balance(&body)?;
    let reason = body.optional("reason", http::name(200))?;
    check_grant(&caller.user, role)?;
    let store = ctx.store;
    let user = store
        .create_user(&NewUser {
            username,
            password_hash: store.hash_password(&password),
            role,
            enabled,
            balance_unlimited: unlimited,
        })
        .map_err(|e| ctx.store_error(e).with_param("username"))?;
    let user = match balance {
        Some(amount) => {
            set_balance(ctx, caller, &user.id, amount, reason.as_deref())?;
            find(ctx, &user.id)?
        }
        None => user,
    };
    http::created(user_json(&user))
}

/// `PUT /users/{id}` `{role?, enabled?, password?, balance_nano_usd? | balance_usd?,
/// balance_unlimited?, reason?}`.
pub fn update(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let body = ctx.body()?;
    let new_role = body.optional("role", role)?;
    let enabled = body.optional("enabled", http::boolean)?;
    let password = body.optional("password", http::string)?;
    if let Some(password) = &password {
        check_password(password, "password")?;
    }
    let unlimited = body.optional("balance_unlimited", http::boolean)?;
    let balance = balance(&body)?;
    let reason = body.optional("reason", http::name(200))?;

    let target = find(ctx, ctx.param("id"))?;
    check_target(&caller.user, &target)?;
    if let Some(new_role) = new_role {
        check_grant(&caller.user, new_role)?;
    }
    let stays =
        new_role.unwrap_or(target.role) == Role::SuperAdmin && enabled.unwrap_or(target.enabled);
    check_last_super_admin(ctx, &target, stays)?;

    let store = ctx.store;
    let patch = UserPatch {
        role: new_role,
        enabled,
        password_hash: password.map(|password| store.hash_password(&password)),
        balance_unlimited: unlimited,
    };
    let changes = patch.role.is_some()
        || patch.enabled.is_some()
        || patch.password_hash.is_some()
        || patch.balance_unlimited.is_some();
    if changes {
        store
            .update_user(&target.id, &patch)
            .map_err(|e| ctx.store_error(e))?;
    }
    if let Some(amount) = balance {
        set_balance(ctx, caller, &target.id, amount, reason.as_deref())?;
    }
    let changed: Vec<&str> = [
        ("role", new_role.is_some()),
        ("enabled", enabled.is_some()),
        ("password", patch.password_hash.is_some()),
        ("balance_unlimited", unlimited.is_some()),
        ("balance", balance.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, given)| given.then_some(field))
    .collect();
    if !changed.is_empty() {
        store.info(&format!(
            "{} changed {} of user {} ({})",
            caller.user.username,
            changed.join(", "),
            target.username,
            target.id
        ));
    }
    http::ok(user_json(&find(ctx, &target.id)?))
}

/// `DELETE /users/{id}`: their sessions and keys go, their ledger rows stay.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let target = find(ctx, ctx.param("id"))?;
    check_target(&caller.user, &target)?;
    check_last_super_admin(ctx, &target, false)?;
    ctx.store
        .delete_user(&target.id)
        .map_err(|e| ctx.store_error(e))?;
    ctx.store.info(&format!(
        "{} deleted user {} ({})",
        caller.user.username, target.username, target.id
    ));
    http::deleted()
}
