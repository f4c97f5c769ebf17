//! The gateway's error type, and the one place where it becomes an HTTP response in the
//! client's dialect: OpenAI's `{"error": {"message", "type", "param", "code"}}` on the OpenAI
//! endpoints, Anthropic's `{"type": "error", "error": {"type", "message"}}` on `/v1/messages`,
//! so each SDK raises its own typed exception.

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::route::RouteFailure;
use crate::routing::RouteRefusal;
use crate::server::body::BodyError;
use crate::server::{ResponseBody, json_response};

/// The header every gateway response carries.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The header the Anthropic SDKs read a request's id from (`message._request_id`, an error's
/// `request_id`); an Anthropic-dialect answer carries Monoize's id in it as well.
pub const ANTHROPIC_REQUEST_ID_HEADER: &str = "request-id";

/// Which API family a client speaks, so its errors come in its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI-shaped errors.
    OpenAi,
    /// Anthropic-shaped errors (`/v1/messages`).
    Anthropic,
}

/// Why the gateway did not serve a request. Upstream answers that are the request's fault
/// (`400`, `413`, `422` and the other client errors that do not speak of the channel) are not
/// errors: they are passed through as they came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No key, an unknown key, a wrong hash, a disabled or expired key or user: one answer.
    #[error("invalid API key")]
    Unauthorized,
    /// A forwarding endpoint asked with another method than `POST`.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body exceeds `MONOIZE_HTTP_BODY_MAX_BYTES`.
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured cap.
        limit: u64,
    },
    /// The body stopped arriving for longer than `MONOIZE_HTTP_BODY_TIMEOUT_MS`.
    #[error("the request body stalled: nothing of it arrived for {timeout_ms} ms")]
    BodyStalled {
        /// The timeout in force, in ms.
        timeout_ms: u128,
    },
    /// The request is malformed (not JSON, no `model`, a bad `max_multiplier`, …).
    #[error("{0}")]
    BadRequest(String),
    /// The request asks for something the gateway cannot serve and bill as it should.
    #[error("{message}")]
    UnsupportedParameter {
        /// The request field.
        param: &'static str,
        /// Why, and what to do instead.
        message: String,
    },
    /// The body came in a content coding the gateway does not read.
    #[error("{0}")]
    UnsupportedContentEncoding(String),
    /// The key may not use this model.
    #[error("this API key may not use the model `{0}`")]
    ModelNotAllowed(String),
    /// `GET /v1/models/{id}` of a model the key cannot reach (none serves it, or its limits
    /// leave it out: the same answer, so a key learns nothing of models it may not use).
    #[error("the model `{0}` does not exist or this API key cannot use it")]
    ModelNotFound(String),
    /// The client's address is not in the key's whitelist.
    #[error("this API key may not be used from this address")]
    AddressNotAllowed,
    /// Billing refused: a limited balance at or below zero.
    #[error("insufficient balance: {0}")]
    InsufficientBalance(String),
    /// The key's quota is used up (a limited key at or below zero).
    #[error("the quota of this API key is used up")]
    KeyQuotaExhausted,
    /// Billing refused for another reason.
    #[error("billing denied the request: {0}")]
    BillingDenied(String),
    /// The route phase produced no plan.
    #[error(transparent)]
    Route(#[from] RouteFailure),
    /// Every attempt of the plan failed. Never carries an upstream body: an upstream `401`
    /// can quote part of a channel key.
    #[error("no upstream could serve the model `{model}`: {attempts} attempt(s) failed")]
    UpstreamExhausted {
        /// The logical model asked for.
        model: String,
        /// How many attempts were made.
        attempts: usize,
    },
    /// The upstream's whole answer is larger than the gateway holds: the request asked for
    /// too much at once (stream it, or ask for less).
    #[error(
        "the upstream's answer exceeds the {limit} bytes the gateway holds; ask for less at once, or stream it"
    )]
    UpstreamAnswerTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A Responses API request continues a response (`previous_response_id`) that was served
    /// to another user: answered as OpenAI answers an id it does not know.
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    /// No stored response of this id was served to this user (or it is no longer known).
    #[error("Response with id '{0}' not found.")]
    ResponseNotFound(String),
    /// The channel holding a stored response did not answer for it.
    #[error("the upstream holding response '{0}' did not answer")]
    StoredResponseUnreachable(String),
    /// A method and path the gateway does not serve.
    #[error("Invalid URL ({0})")]
    UnknownPath(String),
    /// A fault of the host itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BodyError> for GatewayError {
    fn from(error: BodyError) -> GatewayError {
        match error {
            BodyError::TooLarge { limit } => GatewayError::BodyTooLarge { limit },
            BodyError::Stalled { timeout_ms } => GatewayError::BodyStalled { timeout_ms },
            BodyError::Unreadable(_) | BodyError::Undecodable(_) => {
                GatewayError::BadRequest(error.to_string())
            }
            BodyError::UnsupportedEncoding(_) => {
                GatewayError::UnsupportedContentEncoding(error.to_string())
            }
        }
    }
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BadRequest(_)
            | GatewayError::PreviousResponseNotFound(_)
            | GatewayError::UnsupportedParameter { .. } => StatusCode::BAD_REQUEST,
            GatewayError::UnsupportedContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::ModelNotAllowed(_)
            | GatewayError::AddressNotAllowed
            | GatewayError::BillingDenied(_) => StatusCode::FORBIDDEN,
            GatewayError::InsufficientBalance(_) | GatewayError::KeyQuotaExhausted => {
                StatusCode::PAYMENT_REQUIRED
            }
            GatewayError::ModelNotFound(_)
            | GatewayError::ResponseNotFound(_)
            | GatewayError::UnknownPath(_) => StatusCode::NOT_FOUND,
            GatewayError::StoredResponseUnreachable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Route(RouteFailure::Refused(refusal)) => match refusal {
                RouteRefusal::UnknownModel(_) => StatusCode::NOT_FOUND,
                RouteRefusal::NotPermitted(_) => StatusCode::FORBIDDEN,
                RouteRefusal::NoAvailableChannel(_) => StatusCode::SERVICE_UNAVAILABLE,
                RouteRefusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            GatewayError::Route(RouteFailure::Plugin(_)) | GatewayError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            GatewayError::UpstreamExhausted { .. }
            | GatewayError::UpstreamAnswerTooLarge { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The OpenAI `(type, code)` pair.
    fn openai_kind(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::Unauthorized => ("authentication_error", "unauthorized"),
            GatewayError::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            GatewayError::BodyStalled { .. } => ("invalid_request_error", "request_timeout"),
            GatewayError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            GatewayError::UnsupportedContentEncoding(_) => {
                ("invalid_request_error", "unsupported_content_encoding")
            }
            GatewayError::UnsupportedParameter { .. } => {
                ("invalid_request_error", "unsupported_parameter")
            }
            GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::AddressNotAllowed => ("permission_error", "ip_not_allowed"),
            GatewayError::InsufficientBalance(_) => {
                ("insufficient_balance", "insufficient_balance")
            }
            GatewayError::KeyQuotaExhausted => ("insufficient_quota", "key_quota_exhausted"),
            GatewayError::BillingDenied(_) => ("permission_error", "billing_denied"),
            GatewayError::Route(RouteFailure::Refused(refusal)) => match refusal {
                RouteRefusal::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
                RouteRefusal::NotPermitted(_) => ("permission_error", "model_not_permitted"),
                RouteRefusal::NoAvailableChannel(_) => ("server_error", "no_available_channel"),
                RouteRefusal::Failed(_) => ("server_error", "routing_failed"),
            },
            GatewayError::Route(RouteFailure::Plugin(_)) => ("server_error", "plugin_failed"),
            GatewayError::UpstreamExhausted { .. } => ("upstream_error", "upstream_error"),
            GatewayError::UpstreamAnswerTooLarge { .. } => ("upstream_error", "answer_too_large"),
            GatewayError::PreviousResponseNotFound(_) => {
                ("invalid_request_error", "previous_response_not_found")
            }
            GatewayError::ResponseNotFound(_) => ("invalid_request_error", "response_not_found"),
            GatewayError::UnknownPath(_) => ("invalid_request_error", "unknown_url"),
            GatewayError::StoredResponseUnreachable(_) => ("upstream_error", "upstream_error"),
            GatewayError::Internal(_) => ("server_error", "internal_error"),
        }
    }

    /// The OpenAI `param`: the request field at fault, where one is.
    fn openai_param(&self) -> Option<&'static str> {
        match self {
            GatewayError::PreviousResponseNotFound(_) => Some("previous_response_id"),
            GatewayError::UnsupportedParameter { param, .. } => Some(param),
            _ => None,
        }
    }

    /// Anthropic's error type for the status.
    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::PAYMENT_REQUIRED => "billing_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::REQUEST_TIMEOUT => "timeout_error",
            StatusCode::BAD_REQUEST
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid_request_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            _ => "api_error",
        }
    }

    /// The response in `dialect`'s shape, carrying `request_id`.
    pub fn into_response(self, dialect: Dialect, request_id: &str) -> Response<ResponseBody> {
        let message = self.to_string();
        let body = match dialect {
            Dialect::OpenAi => {
                let (error_type, code) = self.openai_kind();
                json!({"error": {"message": message, "type": error_type, "param": self.openai_param(), "code": code}})
            }
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": message}})
            }
        };
        let mut response = json_response(self.status(), &body);
        set_request_id(&mut response, request_id, dialect);
        response
    }
}

/// Sets the `x-request-id` header, and for the Anthropic dialect `request-id` too, so each
/// SDK reports Monoize's id in its own place (skipped only if the id is not a valid header
/// value, which ids the gateway makes always are).
pub fn set_request_id<B>(response: &mut Response<B>, request_id: &str, dialect: Dialect) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        let headers = response.headers_mut();
        if dialect == Dialect::Anthropic {
            headers.insert(ANTHROPIC_REQUEST_ID_HEADER, value.clone());
        }
        headers.insert(REQUEST_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_whose_fault_it_is() {
        assert_eq!(GatewayError::Unauthorized.status(), 401);
        assert_eq!(GatewayError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(GatewayError::InsufficientBalance("x".into()).status(), 402);
        assert_eq!(GatewayError::KeyQuotaExhausted.status(), 402);
        let unknown = GatewayError::Route(RouteRefusal::UnknownModel("m".into()).into());
        assert_eq!(unknown.status(), 404);
        let exhausted = GatewayError::UpstreamExhausted {
            model: "m".into(),
            attempts: 3,
        };
        assert_eq!(exhausted.status(), 502);
        assert!(exhausted.to_string().contains("`m`") && exhausted.to_string().contains('3'));
    }

    #[test]
    fn both_dialects_carry_the_request_id() {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            let response = GatewayError::Unauthorized.into_response(dialect, "req-1");
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
            assert_eq!(
                response
                    .headers()
                    .get(ANTHROPIC_REQUEST_ID_HEADER)
                    .is_some(),
                dialect == Dialect::Anthropic
            );
        }
    }
}
