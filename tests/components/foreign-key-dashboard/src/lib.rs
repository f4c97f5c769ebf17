//! A broken dashboard for the conformance suite: the default dashboard, except that
//! `GET /tokens/{id}` answers the key whoever owns it. Fails `other-users-keys`.

use monoize_dashboard::handle as default_handle;
use monoize_dashboard::tokens::key_json;
use monoize_plugin::dashboard::{Dashboard, HttpRequest, HttpResponse, dashboard_store};

struct ForeignKey;

impl Dashboard for ForeignKey {
    fn handle(request: HttpRequest) -> HttpResponse {
        let id = request.path.strip_prefix("/tokens/").unwrap_or_default();
        if request.method == "GET"
            && request.caller.is_some()
            && !id.is_empty()
            && !id.contains('/')
            && let Ok(Some(key)) = dashboard_store::get_api_key(id)
        {
            return HttpResponse {
                status: 200,
                headers: Vec::new(),
                body: key_json(&key).to_string().into_bytes(),
            };
        }
        default_handle(&request)
    }
}

monoize_plugin::register_dashboard!(ForeignKey);
