//! The default dashboard component: registers `monoize-dashboard`'s handlers, over the host's
//! imports, as the `dashboard` world's `handle`. Everything else lives in `monoize-dashboard`.

use monoize_plugin::dashboard::{Dashboard, HttpRequest, HttpResponse};

/// The default dashboard.
struct DefaultDashboard;

impl Dashboard for DefaultDashboard {
    fn handle(request: HttpRequest) -> HttpResponse {
        monoize_dashboard::handle(&request)
    }
}

monoize_plugin::register_dashboard!(DefaultDashboard);
