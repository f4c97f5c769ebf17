//! `GET /v1/models` and `GET /v1/models/{id}`: the logical models the key can reach. Each
//! entry carries OpenAI's model fields and Anthropic's, and the list both APIs' page fields, so
//! the OpenAI and the Anthropic SDK (Claude Code lists models too) each read it as their own.

use serde_json::{Value, json};

use super::auth::VerifiedKey;
use super::policy;
use crate::routing::RoutingSnapshot;

/// The list of the models the key can use (sorted, distinct): served by a provider open to
/// its group, within its multiplier ceiling and its model limits.
pub fn list(snapshot: &RoutingSnapshot, key: &VerifiedKey) -> Value {
    let models = reachable(snapshot, key);
    let data: Vec<Value> = models.iter().copied().map(entry).collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    })
}

/// The entry of model `id`, if the key can reach it.
pub fn one(snapshot: &RoutingSnapshot, key: &VerifiedKey, id: &str) -> Option<Value> {
    reachable(snapshot, key).contains(&id).then(|| entry(id))
}

fn reachable<'a>(snapshot: &'a RoutingSnapshot, key: &VerifiedKey) -> Vec<&'a str> {
    let groups = policy::key_groups(key);
    snapshot
        .servable_models(key.max_multiplier, groups.as_deref())
        .into_iter()
        .filter(|model| {
            key.model_limits
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|name| name == model))
        })
        .collect()
}

/// One model: OpenAI's `id`, `object`, `created`, `owned_by` and Anthropic's `type`,
/// `display_name`, `created_at`. Monoize knows no creation date: the epoch stands for it.
fn entry(model: &str) -> Value {
    json!({
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "monoize",
        "type": "model",
        "display_name": model,
        "created_at": "1970-01-01T00:00:00Z",
    })
}
