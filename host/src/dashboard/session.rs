//! Session resolution: the token a request presents (`Authorization: Bearer <token>`, else
//! the `monoize_session` cookie) is hashed, looked up, and accepted only while it has not
//! expired and its user exists and is enabled. Sessions are stored only as hashes.

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE};

use crate::db::{Database, DbError, clock, sessions, users};
use crate::plugins::crypto::hash_secret;
use crate::plugins::dashboard::Caller;

/// The cookie the dashboard's session token may travel in.
pub const SESSION_COOKIE: &str = "monoize_session";

/// The session token a request presents: the bearer token first, else the cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty());
    bearer.or_else(|| {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, token)| token.trim().trim_matches('"'))
            .filter(|token| !token.is_empty())
    })
}

/// The caller `token` logs in, if its session is live and its user enabled.
pub async fn resolve(database: &Database, token: &str) -> Result<Option<Caller>, DbError> {
    let hash = hash_secret(token);
    database
        .read(move |conn| {
            let Some(session) = sessions::by_token_hash(conn, &hash)? else {
                return Ok(None);
            };
            if session.is_expired_at(&clock::now()) {
                return Ok(None);
            }
            let Some(user) = users::get(conn, &session.user_id)?.filter(|user| user.enabled) else {
                return Ok(None);
            };
            Ok(Some(Caller {
                user_id: user.id,
                username: user.username,
                role: user.role,
                session_id: session.id,
            }))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::{NewUser, Role};
    use hyper::header::HeaderValue;

    #[test]
    fn the_bearer_token_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers), None);
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; monoize_session=c00kie; b=2"),
        );
        assert_eq!(presented_token(&headers), Some("c00kie"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        assert_eq!(presented_token(&headers), Some("t0ken"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_token(&headers), Some("c00kie"));
        headers.insert(COOKIE, HeaderValue::from_static("monoize_sessionx=1"));
        assert_eq!(presented_token(&headers), None);
    }

    #[tokio::test]
    async fn only_live_sessions_of_enabled_users_resolve() {
        let db = Database::open_in_memory().unwrap();
        let user = db
            .write(|tx| users::insert(tx, &NewUser::new("ann", "h", Role::Admin)))
            .await
            .unwrap();
        let (id, expired_id) = (user.id.clone(), user.id.clone());
        db.write(move |tx| {
            sessions::create(tx, &id, &hash_secret("live"), &clock::seconds_from_now(60))?;
            sessions::create(
                tx,
                &expired_id,
                &hash_secret("old"),
                &clock::seconds_from_now(-1),
            )
        })
        .await
        .unwrap();
        let caller = resolve(&db, "live").await.unwrap().unwrap();
        assert_eq!(
            (caller.username.as_str(), caller.role),
            ("ann", Role::Admin)
        );
        assert_eq!(resolve(&db, "old").await.unwrap(), None);
        assert_eq!(resolve(&db, "unknown").await.unwrap(), None);
        let mut disabled = user.clone();
        disabled.enabled = false;
        db.write(move |tx| users::update(tx, &disabled))
            .await
            .unwrap();
        assert_eq!(resolve(&db, "live").await.unwrap(), None);
    }
}
