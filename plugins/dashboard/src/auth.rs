//! `/auth/*`: register, login, logout, me.
//!
//! - Register: the first user of an empty database becomes `super_admin`. Later
//!   self-registration is off in this version ([`SELF_REGISTRATION`]): it answers 403, and
//!   administrators create users with `POST /users` (or the `monoize user create` CLI).
//! - Login: the password is checked with `crypto.verify-password` (argon2id, in the host); every
//!   failure — unknown user, wrong password, disabled user — is the same 401. A session is a
//!   random token, stored only as its `crypto.hash-secret`; the token is answered once, in the
//!   body and in the `monoize_session` cookie.
//! - Logout ends the session the request came with (by the hash of `session-token`).

use serde_json::json;

use crate::http::{self, ApiError, Body};
use crate::router::Ctx;
use crate::store::{HttpResponse, NewUser, Role, Store, User};
use crate::users::user_json;

/// Whether anyone may register once a user exists. Off in this version: there is no setting
/// to turn it on, so the only self-registration is the first user's.
pub const SELF_REGISTRATION: bool = false;

/// How long a session lasts: 7 days.
pub const SESSION_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// Random bytes in a session token (URL-safe base64, 43 characters).
const SESSION_TOKEN_BYTES: u32 = 32;

/// The longest password accepted; argon2 over megabytes would only burn the host's time.
const MAX_PASSWORD_CHARS: usize = 1024;

/// A well-formed argon2id hash of no password anyone sends, verified when the username is
/// unknown, so a failed login costs the same whether or not the user exists.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bW9ub2l6ZWRlY295c2FsdA$\
                          Ea3xvW2mTSfIX3mFuk0Wm2mQ3Q0VYcJvCYhLKFzjCsY";

/// A username: 3–22 characters of `[A-Za-z0-9_]`.
pub fn check_username(username: &str, param: &str) -> Result<(), ApiError> {
    let length = username.len();
    if !(3..=22).contains(&length)
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be 3 to 22 characters of letters, digits and `_`"),
        ));
    }
    Ok(())
}

/// A password: at least 8 characters (at most 1024).
pub fn check_password(password: &str, param: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if length < 8 {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be at least 8 characters"),
        ));
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The `username` and `password` of a register or login body, checked.
fn credentials_of(body: &Body) -> Result<(String, String), ApiError> {
    let username = body.required("username", http::string)?;
    let password = body.required("password", http::string)?;
    check_username(&username, "username")?;
    check_password(&password, "password")?;
    Ok((username, password))
}

/// `POST /auth/register` `{username, password}` → 201 `{token, user}`.
pub fn register(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let (username, password) = credentials_of(&body)?;
    let store = ctx.store;
    let existing = store.count_users().map_err(|e| ctx.store_error(e))?;
    let role = if existing == 0 {
        Role::SuperAdmin
    } else if SELF_REGISTRATION {
        Role::User
    } else {
        return Err(ApiError::forbidden(
            "self-registration is off: an administrator creates accounts",
        ));
    };
    let user = store
        .create_user(&NewUser {
            username,
            password_hash: store.hash_password(&password),
            role,
            enabled: true,
            balance_unlimited: false,
        })
        .map_err(|e| ctx.store_error(e).with_param("username"))?;
    start_session(ctx, user, 201)
}

/// `POST /auth/login` `{username, password}` → 200 `{token, user}` and the session cookie.
pub fn login(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let username = body.required("username", http::string)?;
    let password = body.required("password", http::string)?;
    let failed = || ApiError::unauthorized("wrong username or password");
    if username.len() > 64 || password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(failed());
    }
    let store = ctx.store;
    let found = store
        .credentials(&username)
        .map_err(|e| ctx.store_error(e))?;
    let Some((user, hash)) = found else {
        let _ = store.verify_password(&password, DECOY_HASH);
        return Err(failed());
    };
    if !store.verify_password(&password, &hash) || !user.enabled {
        return Err(failed());
    }
    store
        .touch_login(&user.id)
        .map_err(|e| ctx.store_error(e))?;
    let user = store
        .get_user(&user.id)
        .map_err(|e| ctx.store_error(e))?
        .unwrap_or(user);
    start_session(ctx, user, 200)
}

/// Creates a session for `user` and answers `{token, user}` with the cookie.
fn start_session(ctx: &Ctx<'_>, user: User, status: u16) -> Result<HttpResponse, ApiError> {
    let store: &dyn Store = ctx.store;
    let token = store.random_token(SESSION_TOKEN_BYTES);
    let expires_at = store
        .now_ms()
        .saturating_add(SESSION_TTL_SECONDS.saturating_mul(1000));
    store
        .create_session(&user.id, &store.hash_secret(&token), expires_at)
        .map_err(|e| ctx.store_error(e))?;
    let mut response =
        http::json_response(status, &json!({ "token": token, "user": user_json(&user) }));
    response.headers.push((
        "set-cookie".to_owned(),
        format!(
            "monoize_session={token}; HttpOnly; SameSite=Strict; Path=/api/dashboard; \
             Max-Age={SESSION_TTL_SECONDS}"
        ),
    ));
    Ok(response)
}

/// `POST /auth/logout` → 200 `{"logged_out": true}`; the cookie is cleared.
pub fn logout(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    ctx.principal()?;
    let token = ctx
        .request
        .session_token
        .as_deref()
        .ok_or_else(|| ApiError::unauthorized("log in first: no session token"))?;
    let store = ctx.store;
    store
        .delete_session(&store.hash_secret(token))
        .map_err(|e| ctx.store_error(e))?;
    let mut response = http::json_response(200, &json!({ "logged_out": true }));
    response.headers.push((
        "set-cookie".to_owned(),
        "monoize_session=; HttpOnly; SameSite=Strict; Path=/api/dashboard; Max-Age=0".to_owned(),
    ));
    Ok(response)
}

/// `GET /auth/me` → the caller.
pub fn me(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    http::ok(user_json(&ctx.principal()?.user))
}
