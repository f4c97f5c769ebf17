//! The HTTP plumbing of `/api/dashboard/*` (DESIGN §9): the host bounds the body, requires
//! JSON, resolves the session (`Authorization: Bearer <token>` or the `monoize_session`
//! cookie) into the caller, and makes one call to the dashboard plugin's `handle`, whose
//! answer it returns as JSON. Who may do what is the plugin's decision, not this module's.
//!
//! The errors the host answers itself are [`DashboardError`], turned into HTTP in one place
//! ([`DashboardError::into_response`]) in the dashboard's one error shape,
//! `{"error": {"message", "type", "param", "code"}}` (the default plugin answers the same); a
//! plugin that
//! fails (trap, timeout, out of memory) is a `500 plugin_failed` naming the plugin, and the
//! host keeps serving.
//!
//! Logins are throttled per client address here, in front of the plugin ([`throttle`]).

pub mod bootstrap;
mod session;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::AppState;
use crate::gateway::error::{Dialect, set_request_id};
use crate::gateway::policy::client_address;
use crate::plugins::PluginError;
use crate::plugins::dashboard::{
    DashboardPlugin, DashboardRequest, DashboardResponse, DashboardServices,
};
use crate::server::body::{self, BodyError};
use crate::server::{ResponseBody, json_response};

pub use session::{SESSION_COOKIE, presented_token};

/// The path prefix this module serves.
pub const PREFIX: &str = "/api/dashboard";

/// The login endpoint, whose failures are throttled.
const LOGIN_PATH: &str = "/api/dashboard/auth/login";

/// The largest dashboard request body: management requests are small, so the dashboard takes
/// at most this, or less when `MONOIZE_HTTP_BODY_MAX_BYTES` is lower.
pub const DASHBOARD_BODY_MAX_BYTES: u64 = 1 << 20;

/// Whether `path` is served by the dashboard (`/api/dashboard` or below it).
pub fn serves(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The dashboard plugin with everything its calls may reach. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    plugin: DashboardPlugin,
    services: DashboardServices,
    logins: Arc<throttle::LoginThrottle>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Dashboard")
            .field("plugin", &self.plugin.name())
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// `plugin` answering over `services`.
    pub fn new(plugin: DashboardPlugin, services: DashboardServices) -> Dashboard {
        Dashboard {
            plugin,
            services,
            logins: Arc::default(),
        }
    }

    /// The dashboard plugin.
    pub fn plugin(&self) -> &DashboardPlugin {
        &self.plugin
    }

    /// What its calls may reach.
    pub fn services(&self) -> &DashboardServices {
        &self.services
    }
}

/// Why the host answered a dashboard request itself.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The body is over the limit (413).
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// The body stopped arriving for longer than the body timeout (408).
    #[error("the request body stalled: nothing of it arrived for {timeout_ms} ms")]
    BodyStalled {
        /// The timeout in force, in ms.
        timeout_ms: u128,
    },
    /// A body that is not declared as JSON (415).
    #[error("the request body must be JSON (content-type: application/json)")]
    NotJson,
    /// Too many failed logins from the client's address (429): it may try again after
    /// `retry_after_secs`.
    #[error("too many failed logins from this address; try again in {retry_after_secs} s")]
    TooManyLogins {
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
    /// The body could not be read (400).
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    /// The plugin failed (500).
    #[error(transparent)]
    Plugin(PluginError),
    /// The host failed (500); the message is for logs only.
    #[error("internal error")]
    Internal(String),
}

impl From<BodyError> for DashboardError {
    fn from(error: BodyError) -> DashboardError {
        match error {
            BodyError::TooLarge { limit } => DashboardError::BodyTooLarge { limit },
            BodyError::Stalled { timeout_ms } => DashboardError::BodyStalled { timeout_ms },
            BodyError::Unreadable(reason) | BodyError::Undecodable(reason) => {
                DashboardError::BadBody(reason)
            }
            BodyError::UnsupportedEncoding(_) => DashboardError::BadBody(error.to_string()),
        }
    }
}

impl DashboardError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            DashboardError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DashboardError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            DashboardError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DashboardError::TooManyLogins { .. } => StatusCode::TOO_MANY_REQUESTS,
            DashboardError::BadBody(_) => StatusCode::BAD_REQUEST,
            DashboardError::Plugin(_) | DashboardError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable `code` of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            DashboardError::BodyTooLarge { .. } => "body_too_large",
            DashboardError::BodyStalled { .. } => "request_timeout",
            DashboardError::NotJson => "unsupported_media_type",
            DashboardError::TooManyLogins { .. } => "too_many_login_attempts",
            DashboardError::BadBody(_) => "invalid_body",
            DashboardError::Plugin(_) => "plugin_failed",
            DashboardError::Internal(_) => "internal_error",
        }
    }

    /// The one mapping of a host error to HTTP: `{"error": {"message", "type", "param",
    /// "code"}}`, plus the plugin's name and the failure's kind for `plugin_failed`.
    pub fn into_response(self, request_id: &str) -> Response<ResponseBody> {
        let kind = if self.status().is_server_error() {
            "api_error"
        } else {
            "invalid_request_error"
        };
        let body = match &self {
            DashboardError::Plugin(error) => json!({"error": {
                "message": format!("the dashboard plugin `{}` failed ({})", error.plugin, error.reason()),
                "type": kind,
                "param": null,
                "code": self.code(),
                "plugin": error.plugin,
                "reason": error.reason(),
            }}),
            other => json!({"error": {
                "message": other.to_string(),
                "type": kind,
                "param": null,
                "code": other.code(),
            }}),
        };
        let mut response = json_response(self.status(), &body);
        if let DashboardError::TooManyLogins { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        finish(&mut response, request_id);
        response
    }
}

/// Serves one `/api/dashboard/*` request.
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let request_id = new_request_id();
    match answer(&state, request, peer, &request_id).await {
        Ok(response) => response,
        Err(error) => {
            match &error {
                DashboardError::Plugin(failure) => {
                    tracing::error!(request_id, error = %failure, "dashboard plugin failed");
                }
                DashboardError::Internal(message) => {
                    tracing::error!(request_id, %message, "dashboard request failed");
                }
                _ => {}
            }
            error.into_response(&request_id)
        }
    }
}

async fn answer(
    state: &AppState,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &str,
) -> Result<Response<ResponseBody>, DashboardError> {
    let (parts, body) = request.into_parts();
    let dashboard = &state.dashboard;
    // A login from an address with too many failures is refused before its body is read. The
    // method in any case: the plugin's router matches it so.
    let is_login = parts
        .method
        .as_str()
        .eq_ignore_ascii_case(Method::POST.as_str())
        && parts.uri.path() == LOGIN_PATH;
    let login =
        is_login.then(|| client_address(peer, &parts.headers, &state.config.trusted_proxy_cidrs));
    if let Some(address) = login
        && let Some(left) = dashboard.logins.blocked_for(address)
    {
        tracing::warn!(%address, "login refused: too many failed logins from this address");
        return Err(DashboardError::TooManyLogins {
            retry_after_secs: left.as_secs().max(1),
        });
    }
    let limit = DASHBOARD_BODY_MAX_BYTES.min(state.config.http_body_max_bytes);
    let timeout = Duration::from_millis(state.config.http_body_timeout_ms);
    let body = body::read_request(&parts, body, limit, timeout).await?;
    if !body.is_empty() && !is_json(&parts.headers) {
        return Err(DashboardError::NotJson);
    }
    let token = presented_token(&parts.headers).map(str::to_owned);
    let caller = match &token {
        Some(token) => session::resolve(&state.db, token)
            .await
            .map_err(|error| DashboardError::Internal(format!("session lookup: {error}")))?,
        None => None,
    };
    let path = parts.uri.path();
    let path = match path.strip_prefix(PREFIX).unwrap_or(path) {
        "" => "/",
        rest => rest,
    };
    let request = DashboardRequest {
        method: parts.method.as_str().to_owned(),
        path: path.to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        body: body.to_vec(),
        caller,
        session_token: token,
    };
    let answered = dashboard
        .plugin
        .handle(request_id, request, &dashboard.services)
        .await
        .map_err(DashboardError::Plugin)?;
    let cookies = Cookies {
        secure: state.config.session_cookie_secure,
    };
    let response = response_of(dashboard.plugin.name(), answered, request_id, cookies)?;
    if let Some(address) = login {
        match response.status() {
            StatusCode::UNAUTHORIZED => dashboard.logins.failed(address),
            status if status.is_success() => dashboard.logins.succeeded(address),
            _ => {}
        }
    }
    Ok(response)
}

/// How the host amends the cookies a dashboard plugin sets.
#[derive(Debug, Clone, Copy, Default)]
struct Cookies {
    /// Mark every cookie `Secure` (`MONOIZE_SESSION_COOKIE_SECURE`).
    secure: bool,
}

impl Cookies {
    /// `value`, a `Set-Cookie`, with `Secure` added when asked and not already there.
    fn amend(self, value: HeaderValue) -> HeaderValue {
        let Ok(text) = value.to_str() else {
            return value;
        };
        let already = text
            .split(';')
            .skip(1)
            .any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"));
        if !self.secure || already {
            return value;
        }
        HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(value)
    }
}

/// Whether the request declares a JSON body (`application/json` or `application/*+json`,
/// parameters such as `charset` allowed). Requiring it also keeps cross-site HTML forms,
/// which cannot send it without a CORS preflight, from writing with a cookie session.
fn is_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .is_some_and(|media| {
            media == "application/json"
                || (media.starts_with("application/") && media.ends_with("+json"))
        })
}

/// Whether `name` is a header the plugin may not set: the host frames the body and declares
/// it JSON.
fn host_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type" | "content-length" | "transfer-encoding" | "connection"
    )
}

/// The plugin's answer as HTTP: its status and body, its headers except framing ones (its
/// cookies amended by `cookies`), and `content-type: application/json`. A status outside
/// 100–599 breaks the contract.
fn response_of(
    plugin: &str,
    answered: DashboardResponse,
    request_id: &str,
    cookies: Cookies,
) -> Result<Response<ResponseBody>, DashboardError> {
    let status = StatusCode::from_u16(answered.status)
        .ok()
        .filter(|status| status.as_u16() < 600)
        .ok_or_else(|| {
            DashboardError::Plugin(PluginError::new(
                plugin,
                crate::plugins::PluginErrorKind::ContractViolation(format!(
                    "answered the HTTP status {}",
                    answered.status
                )),
            ))
        })?;
    let body = Full::new(Bytes::from(answered.body))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in answered.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            tracing::warn!(request_id, plugin, header = %name, "dropping a malformed header");
            continue;
        };
        if host_header(&name) {
            continue;
        }
        let value = if name == hyper::header::SET_COOKIE {
            cookies.amend(value)
        } else {
            value
        };
        response.headers_mut().append(name, value);
    }
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    finish(&mut response, request_id);
    Ok(response)
}

/// Every dashboard answer carries its request id and is never cached (it may hold a token).
fn finish(response: &mut Response<ResponseBody>, request_id: &str) {
    set_request_id(response, request_id, Dialect::OpenAi);
    response
        .headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

fn new_request_id() -> String {
    match crate::db::new_id() {
        Ok(id) => format!("req_{}", id.replace('-', "")),
        Err(_) => format!("req_{}", crate::db::clock::now_unix_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_matched_by_segment() {
        assert!(serves("/api/dashboard"));
        assert!(serves("/api/dashboard/"));
        assert!(serves("/api/dashboard/users/1"));
        assert!(!serves("/api/dashboardx"));
        assert!(!serves("/api/v1/chat/completions"));
    }

    #[test]
    fn json_bodies_are_recognised_by_media_type() {
        let mut headers = hyper::HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }

    #[test]
    fn plugin_headers_cannot_reframe_the_body() {
        let answered = DashboardResponse {
            status: 201,
            headers: vec![
                (
                    "set-cookie".to_owned(),
                    "monoize_session=t; HttpOnly".to_owned(),
                ),
                ("content-type".to_owned(), "text/html".to_owned()),
                ("content-length".to_owned(), "1".to_owned()),
                ("bad header".to_owned(), "x".to_owned()),
                ("x-ok".to_owned(), "bad\nvalue".to_owned()),
            ],
            body: b"{}".to_vec(),
        };
        let response = response_of("p", answered.clone(), "req_1", Cookies::default()).unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers["set-cookie"], "monoize_session=t; HttpOnly");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert!(headers.get(hyper::header::CONTENT_LENGTH).is_none());
        assert!(headers.get("x-ok").is_none());
        let secure = Cookies { secure: true };
        let response = response_of("p", answered, "req_1", secure).unwrap();
        assert_eq!(
            response.headers()["set-cookie"],
            "monoize_session=t; HttpOnly; Secure"
        );
        let marked = HeaderValue::from_static("a=1; secure; Path=/");
        assert_eq!(secure.amend(marked.clone()), marked);
    }

    #[test]
    fn an_impossible_status_is_a_plugin_failure() {
        let answered = DashboardResponse {
            status: 42,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let error = response_of("p", answered, "req_1", Cookies::default()).unwrap_err();
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.code(), "plugin_failed");
    }
}
