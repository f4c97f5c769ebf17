//! The Responses API's stored responses: `GET /v1/responses/{id}` (retrieve),
//! `GET /v1/responses/{id}/input_items` (its input, paged by the query) and
//! `DELETE /v1/responses/{id}`. A stored response lives in the upstream account of the channel
//! that served it, and only the user it was served to may reach it (see [`super::affinity`]):
//! the request goes to that channel alone, once, with its query as sent, and its answer comes
//! back as it is. Nothing is billed (the response was, when it was made) and no channel's health
//! moves. An id the gateway did not serve to this user, or no longer remembers, is `404`: it
//! cannot tell whose it would be.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::affinity::Continuation;
use super::error::{Dialect, GatewayError, set_request_id};
use super::log::RequestLog;
use super::policy;
use super::request_id::new_request_id;
use super::{auth, forward};
use crate::app::AppState;
use crate::server::ResponseBody;

/// The metrics label (and the log line's endpoint) of these requests.
const LABEL: &str = "responses_stored";

/// Serves `method` on `/v1/responses/{rest}` (`rest` is `{id}` or `{id}/input_items`).
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
    rest: &str,
) -> Response<ResponseBody> {
    let _in_flight = state.metrics.in_flight();
    let request_id = new_request_id();
    let mut log = RequestLog::new(&request_id, LABEL);
    let response = match serve(&state, &request, peer, rest, &mut log).await {
        Ok(mut response) => {
            set_request_id(&mut response, &request_id, Dialect::OpenAi);
            response
        }
        Err(error) => error.into_response(Dialect::OpenAi, &request_id),
    };
    log.status = response.status().as_u16();
    log.emit();
    state.metrics.request(LABEL, log.status);
    response
}

async fn serve(
    state: &AppState,
    request: &Request<Incoming>,
    peer: SocketAddr,
    rest: &str,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, GatewayError> {
    let key = super::authenticate(state, request.headers(), log).await?;
    let client = policy::client_address(peer, request.headers(), &state.config.trusted_proxy_cidrs);
    policy::check_address(&key, client)?;
    let (id, resource) = match rest.split_once('/') {
        None => (rest, ""),
        Some((id, "input_items")) if request.method() == Method::GET => (id, "/input_items"),
        Some(_) => {
            return Err(GatewayError::UnknownPath(format!(
                "{} /v1/responses/{rest}",
                request.method()
            )));
        }
    };
    let not_found = || GatewayError::ResponseNotFound(id.to_owned());
    if id.is_empty() {
        return Err(not_found());
    }
    let affinity = &state.gateway.affinity;
    let continuation = affinity
        .continuation_of(&state.db, Some(id), &key.user_id)
        .await?;
    let Continuation::Own(holder) = continuation else {
        return Err(not_found());
    };
    let snapshot = state.snapshot.current();
    let (provider, channel) = affinity.locate(holder, &snapshot).ok_or_else(not_found)?;
    log.provider = Some(provider.name.clone());
    log.channel = Some(channel.name.clone());
    log.attempts = 1;
    let query = forward::upstream_query(
        request.uri().query(),
        auth::presented_key(request.headers()),
    );
    let answer = forward::fetch_stored(
        &state.gateway.upstream,
        provider,
        channel,
        request.method().clone(),
        &format!("/{id}{resource}{query}"),
        request.headers(),
    )
    .await
    .map_err(|reason| {
        tracing::info!(request_id = %log.request_id, provider = %provider.name, channel = %channel.name, %reason, "the channel holding a stored response did not answer");
        GatewayError::StoredResponseUnreachable(id.to_owned())
    })?;
    Ok(forward::response_with(
        answer.status,
        answer.headers,
        super::full(answer.body),
    ))
}
