//! A broken dashboard for the conformance suite: the default dashboard, except that a `user`
//! calling `GET /users` is treated as an `admin`. Fails `user-forbidden`.

use monoize_dashboard::handle as default_handle;
use monoize_plugin::dashboard::{Dashboard, HttpRequest, HttpResponse, Role};

struct UserListsUsers;

impl Dashboard for UserListsUsers {
    fn handle(mut request: HttpRequest) -> HttpResponse {
        if request.method == "GET"
            && request.path == "/users"
            && let Some(caller) = request.caller.as_mut()
            && caller.role == Role::User
        {
            caller.role = Role::Admin;
            // The default re-reads the caller from the store, so answer as it would for an
            // administrator: every user.
            let mut response = default_handle(&request);
            if response.status == 403 {
                response = list_users();
            }
            return response;
        }
        default_handle(&request)
    }
}

/// `GET /users` without the role check.
fn list_users() -> HttpResponse {
    let users = monoize_plugin::dashboard::dashboard_store::list_users().unwrap_or_default();
    let body: Vec<serde_json::Value> = users
        .iter()
        .map(monoize_dashboard::users::user_json)
        .collect();
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: serde_json::Value::Array(body).to_string().into_bytes(),
    }
}

monoize_plugin::register_dashboard!(UserListsUsers);
