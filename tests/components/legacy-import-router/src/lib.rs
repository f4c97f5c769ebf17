//! A hostile router for the host's tests: besides the `router` world it imports
//! `monoize:plugin/legacy-store`, which no router may, and calls it. The host must refuse it at
//! load with an error naming that import; `route` is here only so the import is really used.
//!
//! It cannot be written with the SDK (whose `router` world has no such import), so it runs
//! wit-bindgen itself on an inline world that includes `router` and adds the import.

use monoize::plugin::legacy_store::{self, LegacyTable};
use monoize::plugin::types::{Attempt, RouteError};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/since_v0.1.0",
        inline: "
            package monoize-tests:legacy-import-router;

            world legacy-import-router {
                include monoize:plugin/router@0.1.0;
                import monoize:plugin/legacy-store@0.1.0;
            }
        ",
        world: "monoize-tests:legacy-import-router/legacy-import-router",
        generate_all,
    });
}

use bindings::monoize;

struct LegacyImportRouter;

// The export glue is `unsafe extern "C"` code by nature.
#[allow(unsafe_code)]
const _: () = {
    bindings::export!(LegacyImportRouter with_types_in bindings);
};

impl bindings::Guest for LegacyImportRouter {
    fn route(request: bindings::RouteRequest) -> Result<bindings::Plan, RouteError> {
        match legacy_store::list_rows(LegacyTable::Providers) {
            Ok(rows) => Ok(bindings::Plan {
                attempts: rows
                    .into_iter()
                    .take(usize::try_from(request.max_attempts).unwrap_or(usize::MAX))
                    .map(|row| Attempt {
                        provider_id: row,
                        channel_id: "legacy".to_owned(),
                        upstream_model: request.model.clone(),
                        multiplier: 1_000_000_000,
                    })
                    .collect(),
            }),
            Err(error) => Err(RouteError::Failed(format!("legacy-store: {error}"))),
        }
    }
}
