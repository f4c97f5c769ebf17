//! `GET /openapi.json`: the OpenAPI 3 document of the whole dashboard API, kept in
//! `openapi.json` beside this file and held equal to [`crate::router::ROUTES`] by a test.

use crate::http::ApiError;
use crate::router::Ctx;
use crate::store::HttpResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json` (anyone).
pub fn document(_ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: DOCUMENT.as_bytes().to_vec(),
    })
}
