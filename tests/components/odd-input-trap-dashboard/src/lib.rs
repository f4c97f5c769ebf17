//! A broken dashboard for the conformance suite: the default dashboard, except that it traps
//! (panics, which aborts) on a path, query or body that is not ASCII. Fails `bad-input`.

#![allow(clippy::panic)]

use monoize_dashboard::handle as default_handle;
use monoize_plugin::dashboard::{Dashboard, HttpRequest, HttpResponse};

struct OddInputTrap;

impl Dashboard for OddInputTrap {
    fn handle(request: HttpRequest) -> HttpResponse {
        if !request.path.is_ascii() || !request.query.is_ascii() || !request.body.is_ascii() {
            panic!("odd-input-trap-dashboard traps on non-ASCII input");
        }
        default_handle(&request)
    }
}

monoize_plugin::register_dashboard!(OddInputTrap);
