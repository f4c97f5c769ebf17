//! A broken dashboard for the conformance suite: the default dashboard, except that
//! `GET /auth/me` also answers the caller's stored password hash. Fails `secrets-hidden`.

use monoize_dashboard::handle as default_handle;
use monoize_plugin::dashboard::{Dashboard, HttpRequest, HttpResponse, dashboard_store};
use serde_json::Value;

struct LeaksHash;

impl Dashboard for LeaksHash {
    fn handle(request: HttpRequest) -> HttpResponse {
        let mut response = default_handle(&request);
        if request.method == "GET" && request.path == "/auth/me" && response.status == 200 {
            let hash = request
                .caller
                .as_ref()
                .and_then(|caller| {
                    dashboard_store::credentials(&caller.username)
                        .ok()
                        .flatten()
                })
                .map(|(_, hash)| hash);
            if let (Some(hash), Ok(Value::Object(mut me))) =
                (hash, serde_json::from_slice::<Value>(&response.body))
            {
                me.insert("password_hash".to_owned(), Value::String(hash));
                response.body = Value::Object(me).to_string().into_bytes();
            }
        }
        response
    }
}

monoize_plugin::register_dashboard!(LeaksHash);
