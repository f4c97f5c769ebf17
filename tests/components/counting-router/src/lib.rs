//! A router for the host's instance-reuse tests. It counts the calls its instance has served in
//! a global and answers one attempt whose upstream model is `call-<n>`, so a test sees whether
//! a call met a new instance (`call-1`) or one that served calls before. Three models misbehave
//! on purpose: `trap` traps, `grow` asks for more memory than the host's cap allows and, when
//! refused, carries on and answers normally, and `leak` keeps 4 MiB of memory it never frees.
//! Every model that does not trap is planned on its first candidate's first channel.

use std::sync::atomic::{AtomicU32, Ordering};

use monoize_plugin::router::{Attempt, Plan, RouteError, RouteRequest, Router, routing_store};

/// Calls this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// What one `leak` call keeps: 4 MiB.
const LEAK: usize = 4 << 20;

struct CountingRouter;

impl Router for CountingRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        match request.model.as_str() {
            "trap" => std::process::abort(),
            "grow" => {
                // 256 MiB, far over any cap the tests set: refused without a trap.
                let mut hoard: Vec<u8> = Vec::new();
                if hoard.try_reserve_exact(256 << 20).is_ok() {
                    hoard.push(1);
                }
            }
            "leak" => {
                // Written, so the pages are really used; never freed.
                let kept: &'static mut [u8] = Vec::leak(vec![0xA5u8; LEAK]);
                std::hint::black_box(kept);
            }
            _ => {}
        }
        let nothing = || RouteError::Failed(format!("no candidate for {}", request.model));
        let page = routing_store::candidates(&request, 0, 1).map_err(|_| nothing())?;
        let candidate = page.candidates.into_iter().next().ok_or_else(nothing)?;
        let channel = candidate.channels.into_iter().next().ok_or_else(nothing)?;
        Ok(Plan {
            attempts: vec![Attempt {
                provider_id: candidate.provider_id,
                channel_id: channel.id,
                upstream_model: format!("call-{calls}"),
                multiplier: 1_000_000_000,
            }],
        })
    }
}

monoize_plugin::register_router!(CountingRouter);
