//! The route table and the dispatch.
//!
//! [`ROUTES`] is data: one row per method and path pattern, with who may call it and the
//! handler. The OpenAPI document (`openapi.json`) lists the same operations, and a test holds
//! the two equal. A pattern's `{name}` matches one non-empty path segment; a route marked
//! `tail` lets its last `{name}` take the rest of the path, slashes included
//! (`/model-metadata/openai/gpt-4o`). Where a literal and a parameter both match
//! (`/tokens/batch-delete` and `/tokens/{id}`), the literal wins.
//!
//! Before a handler runs, the caller is checked: `Anyone` routes run without a session,
//! `Session` routes need one (401), `Admin` routes need the role `admin` or above (403). The
//! caller is re-read from the store, so a user disabled or deleted since the session began is
//! logged out (401), and a role changed since then counts as changed.

use crate::http::{self, ApiError, Body};
use crate::store::{HttpRequest, HttpResponse, Role, Store, User};
use crate::{auth, ledger, legacy, metadata, models, openapi, providers, tokens, users};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No session needed.
    Anyone,
    /// Any logged-in user.
    Session,
    /// `admin` or `super_admin`.
    Admin,
}

/// A handler: the request in, the answer (or an error answer) out.
pub type Handler = fn(&Ctx<'_>) -> Result<HttpResponse, ApiError>;

/// One row of the route table.
#[derive(Debug)]
pub struct Route {
    /// `GET`, `POST`, `PUT`, `DELETE`.
    pub method: &'static str,
    /// The path under `/api/dashboard`, exactly as in the OpenAPI document.
    pub path: &'static str,
    /// Whether the last parameter takes the rest of the path.
    pub tail: bool,
    /// Who may call it.
    pub access: Access,
    /// What answers it.
    pub handler: Handler,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        tail: false,
        access,
        handler,
    }
}

const fn tail(method: &'static str, path: &'static str, access: Access, handler: Handler) -> Route {
    Route {
        method,
        path,
        tail: true,
        access,
        handler,
    }
}

use Access::{Admin, Anyone, Session};

/// Every route of the dashboard API (DESIGN §9).
pub static ROUTES: &[Route] = &[
    route("POST", "/auth/register", Anyone, auth::register),
    route("POST", "/auth/login", Anyone, auth::login),
    route("POST", "/auth/logout", Session, auth::logout),
    route("GET", "/auth/me", Session, auth::me),
    route("GET", "/users", Admin, users::list),
    route("POST", "/users", Admin, users::create),
    route("GET", "/users/{id}", Admin, users::get),
    route("PUT", "/users/{id}", Admin, users::update),
    route("DELETE", "/users/{id}", Admin, users::delete),
    route("GET", "/tokens", Session, tokens::list),
    route("POST", "/tokens", Session, tokens::create),
    route(
        "POST",
        "/tokens/batch-delete",
        Session,
        tokens::batch_delete,
    ),
    route("GET", "/tokens/{id}", Session, tokens::get),
    route("PUT", "/tokens/{id}", Session, tokens::update),
    route("DELETE", "/tokens/{id}", Session, tokens::delete),
    route("GET", "/providers", Admin, providers::list),
    route("POST", "/providers", Admin, providers::create),
    route("POST", "/providers/reorder", Admin, providers::reorder),
    route("GET", "/providers/{id}", Admin, providers::get),
    route("PUT", "/providers/{id}", Admin, providers::update),
    route("DELETE", "/providers/{id}", Admin, providers::delete),
    route("GET", "/model-metadata", Admin, metadata::list),
    tail("GET", "/model-metadata/{model_id}", Admin, metadata::get),
    tail("PUT", "/model-metadata/{model_id}", Admin, metadata::upsert),
    tail(
        "DELETE",
        "/model-metadata/{model_id}",
        Admin,
        metadata::delete,
    ),
    route("GET", "/models", Admin, models::list),
    route("POST", "/models", Admin, models::create),
    route("GET", "/models/{id}", Admin, models::get),
    route("PUT", "/models/{id}", Admin, models::update),
    route("DELETE", "/models/{id}", Admin, models::delete),
    route("GET", "/ledger", Session, ledger::list),
    route("GET", "/legacy/{table}", Admin, legacy::list),
    route("DELETE", "/legacy/{table}/{id}", Admin, legacy::delete),
    route("GET", "/openapi.json", Anyone, openapi::document),
];

/// The logged-in caller, as the store has them now.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// Their session's id.
    pub session_id: String,
}

/// What a handler gets.
pub struct Ctx<'a> {
    /// The host.
    pub store: &'a dyn Store,
    /// The request as the host sent it.
    pub request: &'a HttpRequest,
    principal: Option<Principal>,
    params: Vec<(&'static str, String)>,
}

impl Ctx<'_> {
    /// The path parameter `name` of the route (decoded).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// The caller; only `Anyone` routes can run without one, and they do not ask.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("log in first"))
    }

    /// The body as a JSON object.
    pub fn body(&self) -> Result<Body, ApiError> {
        Body::parse(&self.request.body)
    }

    /// The query parameter `name`, decoded.
    pub fn query(&self, name: &str) -> Result<Option<String>, ApiError> {
        http::query_param(&self.request.query, name)
    }

    /// A store error as the client's answer (storage failures logged).
    pub fn store_error(&self, error: crate::store::StoreError) -> ApiError {
        http::store_error(error, |line| self.store.warn(line))
    }
}

/// The rank of a role: a role includes the powers of every lower rank.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::SuperAdmin => 2,
        Role::Admin => 1,
        Role::User => 0,
    }
}

/// Whether `role` is `admin` or above.
pub fn is_admin(role: Role) -> bool {
    rank(role) >= rank(Role::Admin)
}

/// Answers one request.
pub fn handle(store: &dyn Store, request: &HttpRequest) -> HttpResponse {
    match dispatch(store, request) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn dispatch(store: &dyn Store, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let (route, params) = find_route(&request.method, &request.path)?;
    let principal = match route.access {
        Access::Anyone => None,
        Access::Session | Access::Admin => Some(resolve_caller(store, request)?),
    };
    if route.access == Access::Admin
        && !principal
            .as_ref()
            .is_some_and(|principal| is_admin(principal.user.role))
    {
        return Err(ApiError::forbidden("this needs the role admin"));
    }
    let ctx = Ctx {
        store,
        request,
        principal,
        params,
    };
    (route.handler)(&ctx)
}

/// The caller of an authenticated route, re-read from the store.
fn resolve_caller(store: &dyn Store, request: &HttpRequest) -> Result<Principal, ApiError> {
    let caller = request
        .caller
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized("log in first: no valid session"))?;
    let user = store
        .get_user(&caller.user_id)
        .map_err(|error| http::store_error(error, |line| store.warn(line)))?;
    match user {
        Some(user) if user.enabled => Ok(Principal {
            user,
            session_id: caller.session_id.clone(),
        }),
        _ => Err(ApiError::unauthorized(
            "log in first: the session's user is disabled or gone",
        )),
    }
}

type Params = Vec<(&'static str, String)>;

/// The route for `method` and `path` with its parameters; 404 when no pattern matches the
/// path, 405 when one does but not with this method.
fn find_route(method: &str, path: &str) -> Result<(&'static Route, Params), ApiError> {
    let unknown = || ApiError::not_found(format!("no such route: {path}"));
    let rest = path.strip_prefix('/').ok_or_else(unknown)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let mut best: Option<(usize, &'static str, Params)> = None;
    for route in ROUTES {
        if best
            .as_ref()
            .is_some_and(|(_, pattern, _)| *pattern == route.path)
        {
            continue;
        }
        let Some(params) = match_pattern(route, &segments)? else {
            continue;
        };
        let better = best
            .as_ref()
            .is_none_or(|(count, _, _)| params.len() < *count);
        if better {
            best = Some((params.len(), route.path, params));
        }
    }
    let (_, pattern, params) = best.ok_or_else(unknown)?;
    let mut allowed = Vec::new();
    for route in ROUTES.iter().filter(|route| route.path == pattern) {
        if route.method.eq_ignore_ascii_case(method) {
            return Ok((route, params));
        }
        allowed.push(route.method);
    }
    Err(ApiError::method_not_allowed(
        format!(
            "{method} is not allowed on {path}; allowed: {}",
            allowed.join(", ")
        ),
        &allowed,
    ))
}

/// The parameters of `segments` under `route`'s pattern; `None` when it does not match.
fn match_pattern(route: &Route, segments: &[&str]) -> Result<Option<Params>, ApiError> {
    let pattern: Vec<&'static str> = route.path.trim_start_matches('/').split('/').collect();
    let fits = if route.tail {
        segments.len() >= pattern.len()
    } else {
        segments.len() == pattern.len()
    };
    if !fits {
        return Ok(None);
    }
    let decode = |text: &str| {
        http::percent_decode(text, false)
            .ok_or_else(|| ApiError::invalid("path", "the path is badly percent-encoded"))
    };
    let mut params = Vec::new();
    for (index, part) in pattern.iter().enumerate() {
        let last = index + 1 == pattern.len();
        let raw = if route.tail && last {
            segments.get(index..).map(|rest| rest.join("/"))
        } else {
            segments.get(index).map(|segment| (*segment).to_owned())
        };
        let Some(raw) = raw else { return Ok(None) };
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                if raw.is_empty() {
                    return Ok(None);
                }
                params.push((name, decode(&raw)?));
            }
            None => {
                if raw != *part {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(method: &str, path: &str) -> (&'static str, &'static str, Params) {
        let (route, params) = find_route(method, path).unwrap();
        (route.method, route.path, params)
    }

    #[test]
    fn literals_win_over_parameters() {
        assert_eq!(
            found("POST", "/tokens/batch-delete").1,
            "/tokens/batch-delete"
        );
        assert_eq!(
            found("GET", "/tokens/abc").2,
            vec![("id", "abc".to_owned())]
        );
        assert_eq!(
            find_route("GET", "/tokens/batch-delete")
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(found("POST", "/providers/reorder").1, "/providers/reorder");
    }

    #[test]
    fn a_tail_parameter_takes_the_rest_of_the_path() {
        let (_, path, params) = found("GET", "/model-metadata/openai/gpt-4o");
        assert_eq!(path, "/model-metadata/{model_id}");
        assert_eq!(params, vec![("model_id", "openai/gpt-4o".to_owned())]);
        let (_, _, params) = found("PUT", "/model-metadata/openai%2Fo1%20mini");
        assert_eq!(params, vec![("model_id", "openai/o1 mini".to_owned())]);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in ["/", "", "/nope", "/users/a/b", "/users/", "/auth/me/x"] {
            assert_eq!(find_route("GET", path).unwrap_err().status(), 404, "{path}");
        }
        let error = find_route("PATCH", "/users/1").unwrap_err();
        assert_eq!(error.status(), 405);
        assert_eq!(find_route("DELETE", "/users").unwrap_err().status(), 405);
        assert_eq!(
            find_route("GET", "/users/%zz").unwrap_err().param(),
            Some("path")
        );
    }

    #[test]
    fn every_route_is_unique() {
        for (index, route) in ROUTES.iter().enumerate() {
            for other in &ROUTES[index + 1..] {
                assert!(
                    !(route.method == other.method && route.path == other.path),
                    "{} {} twice",
                    route.method,
                    route.path
                );
            }
        }
    }
}
