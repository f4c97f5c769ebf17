//! A hostile router for the host's tests: `route` allocates without end, writing to every page it
//! gets, until the host's memory cap refuses to grow the memory (and the allocation failure
//! traps).

use std::hint::black_box;

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct OomRouter;

/// One chunk: 1 MiB, sixteen wasm pages.
const CHUNK: usize = 1 << 20;

impl Router for OomRouter {
    fn route(_request: RouteRequest) -> Result<Plan, RouteError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero bytes, so every page is really written.
            let chunk = vec![0xA5u8; CHUNK];
            hoard.push(black_box(chunk));
        }
    }
}

monoize_plugin::register_router!(OomRouter);
