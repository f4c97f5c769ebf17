//! Responses API continuations. A `/v1/responses` request with `previous_response_id`
//! continues a response that its upstream stored under the account behind the channel that
//! served it: another channel (another account) answers `400 previous_response_not_found`,
//! which is passed through as the request's fault. So the host remembers which channel served
//! each response, and for whom, and:
//!
//! - a continuation of a response it served goes to that channel: the plan keeps only the
//!   attempts on it (in the router's order). When the plan has none (the channel is disabled,
//!   unhealthy, or out of the key's reach) the plan is walked as it is: another channel may
//!   share the account, and if not, the upstream's own answer says so;
//! - a continuation of a response it served to another user is answered as OpenAI answers an
//!   unknown id (`400 previous_response_not_found`), before anything goes upstream: Monoize's
//!   users share a channel's upstream account, where one user's stored response would
//!   otherwise be another's to read on;
//! - a continuation of a response the gateway does not know (never served through it, made
//!   with `store: false`, or past its retention, [`crate::db::housekeeping`]) is
//!   answered the same way, before anything goes upstream: a channel's account may hold
//!   responses made outside Monoize (the operator's own, another system's on the same key),
//!   and an id, once known, would open them to every user of the channel.
//!
//! Every response served is recorded in the database with its charge
//! ([`crate::db::stored_responses`]), so this holds across restarts; the recent ones are kept
//! in memory too, bounded ([`ResponseAffinity::new`]'s capacity, the oldest forgotten first),
//! and one memory does not hold is read from the database ([`ResponseAffinity::continuation_of`]).
//! Each entry in memory is a few 64-bit hashes (keyed by a per-process secret, so no one can make
//! two ids collide), ~50 bytes, not the ids themselves: 100,000 responses take ~5 MB.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::GatewayError;
use crate::db::{Database, stored_responses};
use crate::routing::snapshot::{Channel, Provider};
use crate::routing::{Attempt, RoutingSnapshot};

/// Who a served response belongs to, and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    user: u64,
    provider: u64,
    channel: u64,
}

/// What the host knows of the response a request continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// Not a continuation: the plan as it is.
    Fresh,
    /// Of a response the host does not know (never served through it, or forgotten).
    Unknown,
    /// Of a response this user was served through a channel: keep to that channel.
    Own(Holder),
    /// Of a response served to another user.
    Foreign,
}

/// The responses served recently, by id; cheap to clone.
#[derive(Debug, Clone)]
pub struct ResponseAffinity {
    inner: Arc<Mutex<Remembered>>,
    hasher: RandomState,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Remembered {
    holders: HashMap<u64, Holder>,
    /// Ids in the order they were first remembered: the front is forgotten first.
    order: VecDeque<u64>,
}

impl ResponseAffinity {
    /// Remembers at most `capacity` responses (at least one).
    pub fn new(capacity: usize) -> ResponseAffinity {
        ResponseAffinity {
            inner: Arc::default(),
            hasher: RandomState::new(),
            capacity: capacity.max(1),
        }
    }

    fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    fn lock(&self) -> MutexGuard<'_, Remembered> {
        // A panic elsewhere while holding the lock leaves the maps whole: each change is one
        // insert or remove.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers that `response_id` was served to `user_id` by `attempt`'s channel.
    pub fn remember(&self, response_id: &str, user_id: &str, attempt: &Attempt) {
        self.keep(
            response_id,
            user_id,
            &attempt.provider_id,
            &attempt.channel_id,
        );
    }

    fn keep(&self, response_id: &str, user_id: &str, provider_id: &str, channel_id: &str) {
        let id = self.hash(response_id);
        let holder = Holder {
            user: self.hash(user_id),
            provider: self.hash(provider_id),
            channel: self.hash(channel_id),
        };
        let mut remembered = self.lock();
        if remembered.holders.insert(id, holder).is_none() {
            remembered.order.push_back(id);
        }
        while remembered.order.len() > self.capacity {
            if let Some(oldest) = remembered.order.pop_front() {
                remembered.holders.remove(&oldest);
            }
        }
    }

    /// What is known of the response `previous_response_id` names, for a request of
    /// `user_id`.
    pub fn continuation(&self, previous_response_id: Option<&str>, user_id: &str) -> Continuation {
        let Some(previous) = previous_response_id else {
            return Continuation::Fresh;
        };
        let id = self.hash(previous);
        let Some(holder) = self.lock().holders.get(&id).copied() else {
            return Continuation::Unknown;
        };
        if holder.user == self.hash(user_id) {
            Continuation::Own(holder)
        } else {
            Continuation::Foreign
        }
    }

    /// [`ResponseAffinity::continuation`], asking `database` of a response memory does not
    /// hold (and remembering what it answers); a database that cannot answer is an internal
    /// error, never an unknown response.
    pub async fn continuation_of(
        &self,
        database: &Database,
        previous_response_id: Option<&str>,
        user_id: &str,
    ) -> Result<Continuation, GatewayError> {
        let known = self.continuation(previous_response_id, user_id);
        let Some(previous) = previous_response_id.filter(|_| known == Continuation::Unknown) else {
            return Ok(known);
        };
        let id = previous.to_owned();
        let owner = database
            .read(move |connection| stored_responses::owner(connection, &id))
            .await
            .map_err(|error| {
                // Refused, not routed: an owner that cannot be read might be another user.
                tracing::error!(%error, "cannot read the owner of a stored response");
                GatewayError::Internal(
                    "the owner of the previous response cannot be read".to_owned(),
                )
            })?;
        let Some(owner) = owner else {
            return Ok(Continuation::Unknown);
        };
        self.keep(
            previous,
            &owner.user_id,
            &owner.provider_id,
            &owner.channel_id,
        );
        Ok(self.continuation(previous_response_id, user_id))
    }

    /// Keeps only the attempts on `holder`'s channel, when `attempts` has any.
    pub fn keep_to_channel(&self, holder: Holder, attempts: &mut Vec<Attempt>) {
        let on_channel = |attempt: &Attempt| {
            self.hash(&attempt.channel_id) == holder.channel
                && self.hash(&attempt.provider_id) == holder.provider
        };
        if attempts.iter().any(on_channel) {
            attempts.retain(on_channel);
        }
    }

    /// The provider and channel of `snapshot` that hold `holder`'s response, if it still has
    /// them.
    pub fn locate<'a>(
        &self,
        holder: Holder,
        snapshot: &'a RoutingSnapshot,
    ) -> Option<(&'a Provider, &'a Channel)> {
        snapshot
            .providers()
            .iter()
            .filter(|provider| self.hash(&provider.id) == holder.provider)
            .find_map(|provider| {
                let channel = provider
                    .channels
                    .iter()
                    .find(|channel| self.hash(&channel.id) == holder.channel)?;
                Some((provider, channel))
            })
    }

    /// How many responses are remembered.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(provider: &str, channel: &str) -> Attempt {
        Attempt {
            provider_id: provider.to_owned(),
            channel_id: channel.to_owned(),
            upstream_model: "m".to_owned(),
            multiplier: "1".parse().unwrap(),
        }
    }

    #[test]
    fn a_continuation_keeps_to_the_channel_that_served_its_response_and_only_for_its_user() {
        let affinity = ResponseAffinity::new(10);
        affinity.remember("resp_1", "alice", &attempt("p1", "c2"));
        assert_eq!(affinity.continuation(None, "alice"), Continuation::Fresh);
        assert_eq!(
            affinity.continuation(Some("resp_other"), "alice"),
            Continuation::Unknown
        );
        assert_eq!(
            affinity.continuation(Some("resp_1"), "bob"),
            Continuation::Foreign
        );
        let Continuation::Own(holder) = affinity.continuation(Some("resp_1"), "alice") else {
            panic!("alice's own response");
        };
        let mut plan = vec![
            attempt("p0", "c0"),
            attempt("p1", "c2"),
            attempt("p1", "c3"),
            attempt("p1", "c2"),
        ];
        affinity.keep_to_channel(holder, &mut plan);
        assert_eq!(plan, vec![attempt("p1", "c2"), attempt("p1", "c2")]);
        // A plan without that channel is walked as it is.
        let mut elsewhere = vec![attempt("p0", "c0"), attempt("p2", "c2")];
        affinity.keep_to_channel(holder, &mut elsewhere);
        assert_eq!(elsewhere, vec![attempt("p0", "c0"), attempt("p2", "c2")]);
    }

    #[tokio::test]
    async fn a_response_served_before_a_restart_is_still_kept_to_its_user_and_channel() {
        let database = Database::open_in_memory().unwrap();
        let stored = stored_responses::StoredResponse {
            response_id: "resp_1".to_owned(),
            owner: stored_responses::ResponseOwner {
                user_id: "alice".to_owned(),
                provider_id: "p1".to_owned(),
                channel_id: "c2".to_owned(),
            },
        };
        database
            .write_blocking(move |tx| stored_responses::record(tx, &stored))
            .unwrap();
        // A new process: nothing in memory.
        let affinity = ResponseAffinity::new(10);
        let foreign = affinity
            .continuation_of(&database, Some("resp_1"), "bob")
            .await
            .unwrap();
        assert_eq!(foreign, Continuation::Foreign);
        let Continuation::Own(holder) = affinity
            .continuation_of(&database, Some("resp_1"), "alice")
            .await
            .unwrap()
        else {
            panic!("alice's own response");
        };
        let mut plan = vec![attempt("p0", "c0"), attempt("p1", "c2")];
        affinity.keep_to_channel(holder, &mut plan);
        assert_eq!(plan, vec![attempt("p1", "c2")]);
        assert_eq!(affinity.len(), 1, "remembered once read");
        let never = affinity
            .continuation_of(&database, Some("resp_never"), "alice")
            .await
            .unwrap();
        assert_eq!(never, Continuation::Unknown);
    }

    #[test]
    fn past_its_capacity_the_oldest_response_is_forgotten_first() {
        let affinity = ResponseAffinity::new(2);
        let served = attempt("p", "c");
        affinity.remember("resp_1", "alice", &served);
        affinity.remember("resp_2", "alice", &served);
        affinity.remember("resp_1", "alice", &served);
        assert_eq!(affinity.len(), 2, "a repeat is not a new entry");
        affinity.remember("resp_3", "alice", &served);
        assert_eq!(affinity.len(), 2);
        assert_eq!(
            affinity.continuation(Some("resp_1"), "bob"),
            Continuation::Unknown
        );
        for kept in ["resp_2", "resp_3"] {
            assert_eq!(
                affinity.continuation(Some(kept), "bob"),
                Continuation::Foreign
            );
        }
    }
}
