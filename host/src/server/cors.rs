//! CORS on the API endpoints (`/v1/…`, `/api/v1/…`). Browser clients (NextChat, LobeChat, a
//! page using the OpenAI SDK's `dangerouslyAllowBrowser`) call the gateway from their own
//! origin, and a browser asks first (a preflight `OPTIONS`). The API authenticates by key in a
//! header, never by cookie, so any origin may call it, as OpenAI's own API allows: a page
//! cannot use a key it does not already hold. The dashboard, which has a session cookie, gets
//! no CORS headers and stays same-origin.

use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    HeaderMap, HeaderValue,
};
use hyper::{Response, StatusCode};

use super::ResponseBody;

/// The headers a preflight allows when it names none: what the OpenAI and Anthropic SDKs send.
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type, x-api-key, \
     anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, \
     openai-beta, x-max-multiplier, x-stainless-arch, x-stainless-lang, x-stainless-os, \
     x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, \
     x-stainless-runtime-version, x-stainless-timeout";

/// The answer to a preflight: `204`, any origin, the API's methods, and the headers the
/// browser asked to send (echoed: the key is what authorizes, not a header's name).
pub fn preflight(request: &HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(super::empty_body());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    let asked = request
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    allow(&mut response);
    response
}

/// Lets any origin read `response`, its `x-request-id` included.
pub fn allow<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id, retry-after"),
    );
}
