//! Answers, errors and request bodies.
//!
//! Every error has one shape, whatever the route:
//! `{"error": {"message": "...", "type": "invalid_request_error", "param": "name", "code": "..."}}`
//! with `param` the offending field (or `null`). Bodies are read as a JSON object whose fields
//! are taken one by one ([`Body`]), so a wrong type names its field.

use serde_json::{Map, Value, json};

use crate::store::{HttpResponse, StoreError};

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: u16,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
    /// The `allow` header of a 405.
    allow: Option<String>,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            param: None,
            allow: None,
        }
    }

    /// 400: the field `param` was refused.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_owned()),
            ..Self::new(
                400,
                "invalid_request_error",
                "invalid_value",
                message.into(),
            )
        }
    }

    /// 400: the required field `param` is missing.
    pub fn missing(param: &str) -> Self {
        ApiError {
            param: Some(param.to_owned()),
            ..Self::new(
                400,
                "invalid_request_error",
                "missing_field",
                format!("`{param}` is required"),
            )
        }
    }

    /// 400: the body is not a JSON object.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            400,
            "invalid_request_error",
            "malformed_json",
            message.into(),
        )
    }

    /// 401: no (valid) session, or a failed login.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", "unauthorized", message.into())
    }

    /// 403: the caller's role is too low, or the action is refused to anyone.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", "forbidden", message.into())
    }

    /// 404: nothing there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found_error", "not_found", message.into())
    }

    /// 405: the path exists, the method does not; `allow` lists the methods it takes.
    pub fn method_not_allowed(message: impl Into<String>, allow: &[&str]) -> Self {
        ApiError {
            allow: Some(allow.join(", ")),
            ..Self::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                message.into(),
            )
        }
    }

    /// 409: a unique value is taken, or the change would break an invariant.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, "conflict_error", code, message.into())
    }

    /// 500: the host's storage failed (never for bad input).
    pub fn storage() -> Self {
        Self::new(
            500,
            "api_error",
            "storage_error",
            "the database failed; the host's log has the details".to_owned(),
        )
    }

    /// With `param` set.
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The field named, if any.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The error as its JSON answer.
    pub fn into_response(self) -> HttpResponse {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = json_response(self.status, &body);
        if let Some(allow) = self.allow {
            response.headers.push(("allow".to_owned(), allow));
        }
        response
    }
}

/// What a store error means to the client. `storage` is the only 500; its message goes to the
/// log, not to the client.
pub fn store_error(error: StoreError, log: impl FnOnce(&str)) -> ApiError {
    match error {
        StoreError::NotFound(message) => ApiError::not_found(message),
        StoreError::Conflict(message) => ApiError::conflict("conflict", message),
        StoreError::Invalid(message) => {
            let field = leading_field(&message).map(str::to_owned);
            let mut error = ApiError::new(400, "invalid_request_error", "invalid_value", message);
            error.param = field;
            error
        }
        StoreError::Storage(message) => {
            log(&format!("storage error: {message}"));
            ApiError::storage()
        }
    }
}

/// The field a store's `invalid` message starts with (`"base_url: must be http(s)"`), if any.
fn leading_field(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(':')?;
    let ok = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']' | b'-'));
    ok.then_some(field)
}

/// A JSON answer.
pub fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

/// 200 with `body`.
pub fn ok(body: Value) -> Result<HttpResponse, ApiError> {
    Ok(json_response(200, &body))
}

/// 201 with `body`.
pub fn created(body: Value) -> Result<HttpResponse, ApiError> {
    Ok(json_response(201, &body))
}

/// The answer of a successful delete: `{"deleted": true}`.
pub fn deleted() -> Result<HttpResponse, ApiError> {
    ok(json!({ "deleted": true }))
}

/// A field that may be absent, explicitly `null`, or set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    /// Not in the body.
    Absent,
    /// `null` in the body.
    Null,
    /// A value.
    Set(T),
}

impl<T> Field<T> {
    /// `Set(v)` as `Some(Some(v))`, `Null` as `Some(None)`, `Absent` as `None`.
    pub fn patch(self) -> Option<Option<T>> {
        match self {
            Field::Absent => None,
            Field::Null => Some(None),
            Field::Set(value) => Some(Some(value)),
        }
    }
}

/// A request body: a JSON object. An empty body reads as `{}`.
#[derive(Debug, Clone, Default)]
pub struct Body {
    fields: Map<String, Value>,
}

impl Body {
    /// Parses `bytes`: a JSON object, or nothing.
    pub fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(fields)) => Ok(Body { fields }),
            Ok(_) => Err(ApiError::malformed("the body must be a JSON object")),
            Err(error) => Err(ApiError::malformed(format!(
                "the body is not valid JSON: {error}"
            ))),
        }
    }

    /// A nested object read like a body.
    pub fn from_map(fields: Map<String, Value>) -> Body {
        Body { fields }
    }

    /// The raw value of `name`; `None` when absent (`Some(Null)` when `null`).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// Whether `name` is present (even as `null`).
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// `name` as absent, null or a value read by `read`.
    pub fn field<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Value, &str) -> Result<T, ApiError>,
    ) -> Result<Field<T>, ApiError> {
        match self.fields.get(name) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(value) => read(value, name).map(Field::Set),
        }
    }

    /// `name` read by `read`; absent and `null` both read as `None`.
    pub fn optional<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Value, &str) -> Result<T, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        Ok(match self.field(name, read)? {
            Field::Set(value) => Some(value),
            Field::Absent | Field::Null => None,
        })
    }

    /// `name` read by `read`; absent or `null` is a 400.
    pub fn required<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Value, &str) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.optional(name, read)?
            .ok_or_else(|| ApiError::missing(name))
    }
}

/// A JSON string.
pub fn string(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a string"),
        )),
    }
}

/// A non-empty (after trimming) string of at most `max` characters, trimmed.
pub fn name(max: usize) -> impl Fn(&Value, &str) -> Result<String, ApiError> {
    move |value, param| {
        let text = string(value, param)?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must not be empty"),
            ));
        }
        if trimmed.chars().count() > max {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be at most {max} characters"),
            ));
        }
        Ok(trimmed.to_owned())
    }
}

/// A JSON boolean.
pub fn boolean(value: &Value, param: &str) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be true or false")))
}

/// A JSON whole number within `i64`.
pub fn int(value: &Value, param: &str) -> Result<i64, ApiError> {
    value
        .as_i64()
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be a whole number")))
}

/// A JSON array of strings.
pub fn strings(value: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be an array of strings"),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| string(item, &format!("{param}[{index}]")))
        .collect()
}

/// A JSON array, kept as its JSON text (`transforms`).
pub fn json_array(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::Array(_) => Ok(value.to_string()),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON array"),
        )),
    }
}

/// A JSON object, kept as its JSON text (`capabilities`).
pub fn json_object(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::Object(_) => Ok(value.to_string()),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON object"),
        )),
    }
}

/// Stored JSON text as a value for an answer; text that is not JSON is answered as a string.
pub fn stored_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Percent-decodes `text` (`%2F` → `/`); `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                index += 1;
            }
            other => {
                out.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in a query string (`a=1&b=2`), decoded; the first occurrence wins.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, ApiError> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key, true).as_deref() == Some(name) {
            return percent_decode(value, true)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(name, format!("`{name}` is badly encoded")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_one_shape() {
        let response = ApiError::invalid("name", "`name` must not be empty").into_response();
        assert_eq!(response.status, 400);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"]["param"], "name");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_value");
        assert_eq!(body["error"]["message"], "`name` must not be empty");
    }

    #[test]
    fn store_errors_map_to_statuses_and_hide_storage_details() {
        let mut logged = String::new();
        let error = store_error(StoreError::Storage("disk I/O at /var".into()), |line| {
            logged = line.to_owned()
        });
        assert_eq!(error.status(), 500);
        assert!(!error.message.contains("/var"));
        assert!(logged.contains("/var"));
        assert_eq!(
            store_error(StoreError::Conflict("username".into()), |_| ()).status(),
            409
        );
        assert_eq!(
            store_error(StoreError::NotFound("user".into()), |_| ()).status(),
            404
        );
        let invalid = store_error(StoreError::Invalid("base_url: not http".into()), |_| ());
        assert_eq!((invalid.status(), invalid.param()), (400, Some("base_url")));
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(Body::parse(b"").is_ok());
        assert_eq!(Body::parse(b"{").unwrap_err().code(), "malformed_json");
        assert_eq!(Body::parse(b"[1]").unwrap_err().code(), "malformed_json");
        let body = Body::parse(br#"{"a": null, "b": 3}"#).unwrap();
        assert_eq!(body.field("a", int).unwrap(), Field::Null);
        assert_eq!(body.field("b", int).unwrap(), Field::Set(3));
        assert_eq!(body.field("c", int).unwrap(), Field::Absent);
        assert_eq!(body.required("a", int).unwrap_err().param(), Some("a"));
        assert_eq!(body.required("b", string).unwrap_err().param(), Some("b"));
    }

    #[test]
    fn queries_and_paths_decode() {
        assert_eq!(
            percent_decode("openai%2Fgpt-4o", false).unwrap(),
            "openai/gpt-4o"
        );
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(
            query_param("limit=5&user_id=a%20b", "user_id").unwrap(),
            Some("a b".to_owned())
        );
        assert_eq!(query_param("limit=5", "before").unwrap(), None);
        assert!(query_param("before=%ff", "before").is_err());
    }
}
