//! `GET /v1/models`: the logical models the key can reach, in OpenAI's list shape.

use serde_json::{Value, json};

use super::auth::VerifiedKey;
use crate::routing::RoutingSnapshot;

/// The OpenAI list of the servable models (sorted, distinct), narrowed to the key's model
/// limits when it has them.
pub fn list(snapshot: &RoutingSnapshot, key: &VerifiedKey) -> Value {
    let data: Vec<Value> = snapshot
        .servable_models()
        .into_iter()
        .filter(|model| {
            key.model_limits
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|name| name == model))
        })
        .map(|model| json!({"id": model, "object": "model", "created": 0, "owned_by": "monoize"}))
        .collect();
    json!({"object": "list", "data": data})
}
