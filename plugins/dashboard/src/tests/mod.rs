//! Native unit tests of the handlers against [`fake::FakeStore`]: the role rules, validation,
//! status codes and what answers never contain.

mod auth_users;
mod catalog;
mod fake;
mod openapi;
mod tokens;

use serde_json::{Value, json};

use crate::store::{Caller, HttpRequest, Role, Store};
use fake::FakeStore;

/// A logged-in session: its token and user id.
#[derive(Clone, Debug)]
pub struct Login {
    pub token: String,
    pub user_id: String,
}

/// An answer: status, headers and the body as JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

pub struct Harness {
    pub store: FakeStore,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            store: FakeStore::default(),
        }
    }

    /// What the host would resolve `token` to: the session's user, as a `Caller`.
    fn caller(&self, token: &str) -> Option<Caller> {
        let hash = self.store.hash_secret(token);
        let state = self.store.state.borrow();
        let (session_id, user_id, _, _) = state.sessions.iter().find(|(_, _, h, _)| *h == hash)?;
        let (user, _) = state.users.iter().find(|(u, _)| &u.id == user_id)?;
        Some(Caller {
            user_id: user.id.clone(),
            username: user.username.clone(),
            role: user.role,
            session_id: session_id.clone(),
        })
    }

    /// Sends a raw request.
    pub fn raw(&self, method: &str, path: &str, body: &[u8], who: Option<&Login>) -> Answer {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            body: body.to_vec(),
            caller: who.and_then(|login| self.caller(&login.token)),
            session_token: who.map(|login| login.token.clone()),
        };
        let response = crate::router::handle(&self.store, &request);
        let text = String::from_utf8(response.body).unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status: response.status,
            headers: response.headers,
            body,
            text,
        }
    }

    /// Sends `body` as JSON (`Value::Null`: no body).
    pub fn call(&self, method: &str, path: &str, body: Value, who: Option<&Login>) -> Answer {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.raw(method, path, &bytes, who)
    }

    pub fn get(&self, path: &str, who: &Login) -> Answer {
        self.call("GET", path, Value::Null, Some(who))
    }

    /// Registers the first user (the super_admin) and logs them in.
    pub fn owner(&self) -> Login {
        let answer = self.call(
            "POST",
            "/auth/register",
            json!({"username": "owner", "password": "owner-password"}),
            None,
        );
        assert_eq!(answer.status, 201, "{}", answer.text);
        login_of(&answer)
    }

    /// Creates `username` with `role` as `by`, and logs them in.
    pub fn user(&self, by: &Login, username: &str, role: &str) -> Login {
        let answer = self.call(
            "POST",
            "/users",
            json!({"username": username, "password": "password-123", "role": role}),
            Some(by),
        );
        assert_eq!(answer.status, 201, "{}", answer.text);
        self.login(username, "password-123")
    }

    pub fn login(&self, username: &str, password: &str) -> Login {
        let answer = self.call(
            "POST",
            "/auth/login",
            json!({"username": username, "password": password}),
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.text);
        login_of(&answer)
    }

    /// The role the store holds for `user_id`.
    pub fn role_of(&self, user_id: &str) -> Role {
        self.store.get_user(user_id).unwrap().unwrap().role
    }
}

fn login_of(answer: &Answer) -> Login {
    Login {
        token: answer.body["token"].as_str().unwrap().to_owned(),
        user_id: answer.body["user"]["id"].as_str().unwrap().to_owned(),
    }
}

/// Asserts a 4xx error of the documented shape naming `param`.
#[track_caller]
pub fn assert_error(answer: &Answer, status: u16, param: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    let error = &answer.body["error"];
    assert!(error["message"].is_string(), "{}", answer.text);
    assert!(error["type"].is_string(), "{}", answer.text);
    assert!(error["code"].is_string(), "{}", answer.text);
    assert_eq!(error["param"].as_str(), param, "{}", answer.text);
}

#[test]
fn unknown_routes_are_404_wrong_methods_405_and_malformed_json_400() {
    let h = Harness::new();
    let owner = h.owner();
    assert_error(&h.get("/nothing", &owner), 404, None);
    assert_error(
        &h.call("PATCH", "/users", Value::Null, Some(&owner)),
        405,
        None,
    );
    for path in ["/users", "/tokens", "/providers", "/models", "/auth/login"] {
        let answer = h.raw("POST", path, b"{\"name\": ", Some(&owner));
        assert_error(&answer, 400, None);
        assert_eq!(answer.body["error"]["code"], "malformed_json");
        let answer = h.raw("POST", path, b"[1, 2]", Some(&owner));
        assert_eq!(answer.body["error"]["code"], "malformed_json");
    }
}

#[test]
fn a_storage_failure_is_a_500_that_hides_its_details() {
    let h = Harness::new();
    let owner = h.owner();
    h.store.state.borrow_mut().broken = true;
    let answer = h.get("/auth/me", &owner);
    assert_eq!(answer.status, 500);
    assert!(!answer.text.contains("/var/lib/secret"));
    assert!(
        h.store
            .state
            .borrow()
            .warnings
            .iter()
            .any(|w| w.contains("/var/lib/secret"))
    );
}

#[test]
fn garbage_never_earns_a_5xx() {
    let h = Harness::new();
    let owner = h.owner();
    let user = h.user(&owner, "someone", "user");
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"null",
        b"\xff\xfe",
        b"{}",
        b"{\"id\": {}, \"name\": [], \"username\": 1, \"password\": null}",
        b"{\"models\": [], \"channels\": {}, \"provider_type\": 7, \"ids\": \"x\"}",
        b"{\"max_multiplier\": 1e400, \"balance_usd\": \"1e3\", \"limit\": -1}",
        b"{\"role\": \"root\", \"enabled\": \"yes\", \"balance_nano_usd\": 1.5}",
        b"{\"provider_ids\": [1], \"ip_whitelist\": [\"300.1.1.1\"], \"expires_in_days\": 0}",
        b"{\"channels\": [{\"id\": null, \"name\": \"c\", \"base_url\": \"ftp://x\"}]}",
        b"{\"models\": {\"\": {\"multiplier\": 0}}}",
    ];
    let paths = [
        "/auth/register",
        "/auth/login",
        "/users",
        "/users/u1",
        "/users/nope",
        "/tokens",
        "/tokens/k9",
        "/tokens/batch-delete",
        "/providers",
        "/providers/p1",
        "/providers/reorder",
        "/model-metadata/a/b%2",
        "/model-metadata/openai/gpt-4o",
        "/models",
        "/models/r1",
        "/ledger?limit=abc&before=%",
        "/legacy/users",
        "/legacy/providers/1",
        "/%%%",
    ];
    for who in [None, Some(&owner), Some(&user)] {
        for path in paths {
            for method in ["GET", "POST", "PUT", "DELETE", "HEAD"] {
                for body in &bodies {
                    let answer = h.raw(method, path, body, who);
                    assert!(
                        (200..500).contains(&answer.status),
                        "{method} {path} {:?} -> {} {}",
                        String::from_utf8_lossy(body),
                        answer.status,
                        answer.text
                    );
                    if answer.status >= 400 {
                        assert!(
                            answer.body["error"]["message"].is_string(),
                            "{}",
                            answer.text
                        );
                    }
                }
            }
        }
    }
}
