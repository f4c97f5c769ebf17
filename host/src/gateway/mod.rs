//! The request pipeline: authenticate → authorize → route → forward → settle → log, one
//! module per phase ([`auth`] with [`last_used`], and [`policy`], [`bill`], [`route`],
//! [`forward`] and [`stream`], [`bill`], [`log`]), request ids in `request_id`, one per wire format under [`wire`], and the
//! gateway's error type in [`error`], turned into HTTP there and nowhere else. Each phase
//! counts into [`crate::metrics`].

pub mod affinity;
pub mod auth;
pub mod bill;
pub mod error;
pub mod forward;
pub mod last_used;
pub mod log;
pub mod models;
pub mod policy;
pub mod request_id;
pub mod route;
pub mod stored;
pub mod stream;
pub mod upstream_proxy;
pub mod upstream_tls;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use self::affinity::{Continuation, ResponseAffinity};
use self::auth::{Authenticator, VerifiedKey};
use self::bill::BillingContext;
use self::error::{Dialect, GatewayError, set_request_id};
use self::forward::{
    Answer, ForwardOutcome, Operation, Outbound, Timeouts, Upstream, UpstreamClientError,
};
use self::log::RequestLog;
use self::request_id::new_request_id;
use self::route::RouteFailure;
use self::stream::LiveStreams;
use self::wire::{ClientRequest, StreamUsage};
use crate::app::AppState;
use crate::billing::RequestKey;
use crate::config::Config;
use crate::metrics::{self, InFlight, PluginCall};
use crate::routing::EndpointKind;
use crate::server::{ResponseBody, body, encoding, json_response};

/// The gateway's own state: the key cache, the upstream client, the streams under way and
/// the responses it served.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The authenticate phase with its key cache.
    pub auth: Authenticator,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// The streams being relayed, for a shutdown to cut and wait for.
    pub streams: LiveStreams,
    /// Which channel served each recent Responses API response, and to whom.
    pub affinity: ResponseAffinity,
}

impl Gateway {
    /// A gateway with the upstream timeouts, CA file and proxy, and the `last_used_at`
    /// interval of `config`.
    pub fn new(config: &Config) -> Result<Gateway, UpstreamClientError> {
        Ok(Gateway {
            auth: Authenticator::with_flush_interval(Duration::from_millis(
                config.last_used_flush_ms,
            )),
            upstream: Upstream::new(
                Timeouts::from_config(config),
                config.upstream_ca_file.as_deref(),
                config.upstream_proxy.as_ref(),
                usize::try_from(config.upstream_streams_per_connection).unwrap_or(usize::MAX),
            )?,
            streams: LiveStreams::default(),
            affinity: ResponseAffinity::new(
                usize::try_from(config.response_affinity_capacity).unwrap_or(usize::MAX),
            ),
        })
    }
}

/// The dialect errors of `endpoint` are answered in.
pub fn dialect_of(endpoint: EndpointKind) -> Dialect {
    match endpoint {
        EndpointKind::Messages => Dialect::Anthropic,
        _ => Dialect::OpenAi,
    }
}

/// `GET /v1/models` (`model` `None`) or `GET /v1/models/{model}`, for a key used from an
/// address its whitelist admits; errors in the caller's dialect (Anthropic's when it sends
/// `anthropic-version`, as Anthropic's SDKs do).
pub async fn models(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
    model: Option<String>,
) -> Response<ResponseBody> {
    let _in_flight = state.metrics.in_flight();
    let request_id = new_request_id();
    let answer = state
        .gateway
        .auth
        .authenticate(&state.db, request.headers())
        .await
        .and_then(|key| {
            let trusted = &state.config.trusted_proxy_cidrs;
            let client = policy::client_address(peer, request.headers(), trusted);
            policy::check_address(&key, client)?;
            let snapshot = state.snapshot.current();
            match &model {
                None => Ok(models::list(&snapshot, &key)),
                Some(id) => models::one(&snapshot, &key, id)
                    .ok_or_else(|| GatewayError::ModelNotFound(id.clone())),
            }
        });
    // Both SDKs list models here; Anthropic's always say `anthropic-version`.
    let dialect = if request.headers().contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let response = match answer {
        Ok(body) => {
            let mut response = json_response(StatusCode::OK, &body);
            set_request_id(&mut response, &request_id, dialect);
            response
        }
        Err(error) => error.into_response(dialect, &request_id),
    };
    state.metrics.request("models", response.status().as_u16());
    response
}

/// The metrics label of a forwarding endpoint.
fn endpoint_label(endpoint: EndpointKind, operation: Operation) -> &'static str {
    match operation {
        Operation::Generate => metrics::endpoint_label(endpoint),
        Operation::CountTokens => "messages_count_tokens",
    }
}

/// Serves one forwarding request on `endpoint` from `peer`, asking `operation` of its
/// upstream, through every phase.
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
    endpoint: EndpointKind,
    operation: Operation,
) -> Response<ResponseBody> {
    let in_flight = state.metrics.in_flight();
    let request_id = new_request_id();
    let label = endpoint_label(endpoint, operation);
    let mut unanswered = Unanswered {
        log: RequestLog::new(&request_id, label),
        metrics: &state.metrics,
        answered: false,
    };
    let call = Call {
        endpoint,
        operation,
        peer,
    };
    let outcome = pipeline(&state, request, call, &mut unanswered.log, in_flight).await;
    // From here on the line is written below (or, for a stream, by its relay).
    unanswered.answered = true;
    let log = &mut unanswered.log;
    let response = match outcome {
        Ok(Handled::Done(mut response)) => {
            log.status = response.status().as_u16();
            log.emit();
            set_request_id(&mut response, &request_id, dialect_of(endpoint));
            response
        }
        Ok(Handled::Streaming(mut response)) => {
            set_request_id(&mut response, &request_id, dialect_of(endpoint));
            response
        }
        Err(error) => {
            log.status = error.status().as_u16();
            log.emit();
            error.into_response(dialect_of(endpoint), &request_id)
        }
    };
    state.metrics.request(label, response.status().as_u16());
    response
}

/// The status a request is logged and counted with when its client went away before the answer
/// (nginx's "client closed request"): no response was sent, so no standard status says it.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A forwarding request's log line while no answer is ready. Its client may go away at any
/// await (hyper then drops the request's future, and with it the upstream request): dropped
/// unanswered, it still writes the line and counts the request, with status
/// [`CLIENT_CLOSED_REQUEST`] and whatever the pipeline had noted (the key, the model, the
/// attempt under way and its channel), so the requests an operator most needs to see, clients
/// timing out on a slow upstream, are not the ones missing from the log.
struct Unanswered<'a> {
    log: RequestLog,
    metrics: &'a metrics::Metrics,
    /// Set once the pipeline has answered: the line is then written where the answer is.
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.log.status = CLIENT_CLOSED_REQUEST;
        self.log.emit();
        self.metrics
            .request(self.log.endpoint, CLIENT_CLOSED_REQUEST);
    }
}

/// The authenticate phase: the key `headers` present, noted in the request's log line.
async fn authenticate(
    state: &AppState,
    headers: &hyper::HeaderMap,
    log: &mut RequestLog,
) -> Result<Arc<VerifiedKey>, GatewayError> {
    let key = state.gateway.auth.authenticate(&state.db, headers).await?;
    log.key = Some((key.key_id.clone(), key.user_id.clone()));
    Ok(key)
}

/// Where a forwarding request arrived, and from whom.
#[derive(Debug, Clone, Copy)]
struct Call {
    endpoint: EndpointKind,
    operation: Operation,
    peer: SocketAddr,
}

enum Handled {
    /// The log line is still to be written.
    Done(Response<ResponseBody>),
    /// The relay writes the log line when the stream is over.
    Streaming(Response<ResponseBody>),
}

fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

async fn pipeline(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    call: Call,
    log: &mut RequestLog,
    in_flight: InFlight,
) -> Result<Handled, GatewayError> {
    let Call {
        endpoint,
        operation,
        peer,
    } = call;
    let key = authenticate(state, request.headers(), log).await?;
    let (parts, body) = request.into_parts();
    let bytes = body::read_request(
        &parts,
        body,
        state.config.http_body_max_bytes,
        Duration::from_millis(state.config.http_body_timeout_ms),
    )
    .await?;
    let bytes =
        encoding::decode_request(&parts.headers, bytes, state.config.http_body_max_bytes).await?;
    let client = ClientRequest::parse(endpoint, &bytes)?;
    log.model = Some(client.model.clone());
    let affinity = &state.gateway.affinity;
    let continuation = affinity
        .continuation_of(
            &state.db,
            client.previous_response_id.as_deref(),
            &key.user_id,
        )
        .await?;
    if matches!(continuation, Continuation::Foreign | Continuation::Unknown) {
        return Err(GatewayError::PreviousResponseNotFound(
            client.previous_response_id.clone().unwrap_or_default(),
        ));
    }
    let route_request = policy::apply(
        &key,
        &policy::PolicyInput {
            request_id: &log.request_id,
            model: &client.model,
            endpoint,
            client: policy::client_address(peer, &parts.headers, &state.config.trusted_proxy_cidrs),
            requested_ceilings: [
                policy::header_ceiling(&parts.headers)?,
                client.max_multiplier,
            ],
            quota_left: state.gateway.auth.quota_left(&key),
        },
    )?;
    // authorize
    let context = BillingContext {
        request_id: log.request_id.clone(),
        user_id: key.user_id.clone(),
        model: client.model.clone(),
        endpoint,
        key: RequestKey {
            key_id: key.key_id.clone(),
            quota_limited: key.quota.is_some(),
        },
        estimated_prompt_tokens: client.prompt.tokens(),
    };
    bill::authorize(state, &context).await?;
    // route
    let started = Instant::now();
    let plan = state.routing.plan(&route_request).await;
    state.metrics.plugin_call(
        state.routing.plugin().name(),
        PluginCall::Route,
        started.elapsed(),
        matches!(plan, Err(RouteFailure::Plugin(_))),
    );
    let mut plan = plan?;
    if let Continuation::Own(holder) = continuation {
        affinity.keep_to_channel(holder, &mut plan.attempts);
    }
    // forward
    let body_for = |upstream_model: &str| {
        client
            .upstream_body(endpoint, upstream_model)
            .map_err(|error| error.to_string())
    };
    let query = forward::upstream_query(parts.uri.query(), auth::presented_key(&parts.headers));
    let outbound = Outbound {
        endpoint,
        operation,
        headers: &parts.headers,
        query: &query,
        // A count of tokens is one JSON answer, whatever the body says.
        stream: client.stream && operation == Operation::Generate,
        body_for: &body_for,
    };
    let outcome = forward::forward(
        &state.gateway.upstream,
        &state.health,
        &state.metrics,
        &plan.snapshot,
        &plan.attempts,
        &outbound,
        log,
    )
    .await;
    let served = match outcome {
        ForwardOutcome::TooLarge { attempts } => {
            log.attempts = attempts;
            return Err(GatewayError::UpstreamAnswerTooLarge {
                limit: forward::MAX_WHOLE_BODY,
            });
        }
        ForwardOutcome::Exhausted { attempts } => {
            log.attempts = attempts;
            return Err(GatewayError::UpstreamExhausted {
                model: client.model.clone(),
                attempts,
            });
        }
        ForwardOutcome::Rejected(rejection) => {
            // The upstream's id matters most here: the operator may have to ask why it refused.
            let rejection = *rejection;
            log.upstream_request_id = rejection.upstream_request_id;
            return Ok(Handled::Done(forward::response_with(
                rejection.status,
                rejection.headers,
                full(rejection.body),
            )));
        }
        ForwardOutcome::Served(served) => served,
    };
    log.upstream_request_id = served.upstream_request_id.clone();
    let served = *served;
    let idle = state.gateway.upstream.timeouts().idle;
    match served.answer {
        // Free upstream: nothing to settle.
        Answer::Whole { body, .. } if operation == Operation::CountTokens => Ok(Handled::Done(
            forward::response_with(served.status, served.headers, full(body)),
        )),
        Answer::Stream { first_chunk, rest } => {
            // settle, then log, when the stream is over
            let usage = StreamUsage::new(endpoint, !client.client_wants_usage);
            let live = state.gateway.streams.clone();
            let state = Arc::clone(state);
            let attempt = served.attempt;
            let mut log = log.clone();
            log.status = served.status.as_u16();
            let stores_response = client.stores_response;
            let finish = move |summary: stream::StreamSummary| async move {
                let _in_flight = in_flight;
                // Before the final event reaches the client (it waits for the charge).
                let stored = summary.response_id.as_deref().filter(|_| stores_response);
                let usage = bill::stream_usage_or_estimate(
                    summary.usage,
                    context.estimated_prompt_tokens,
                    summary.text_streamed,
                );
                let charged = bill::settle(&state, &context, &attempt, usage, stored).await;
                log.stream_end = Some(summary.end.as_str());
                log.emit();
                charged
            };
            let body = stream::relay(&live, first_chunk, rest, idle, usage, finish);
            let mut headers = served.headers;
            stream::mark_unbuffered(&mut headers);
            Ok(Handled::Streaming(forward::response_with(
                served.status,
                headers,
                body.boxed(),
            )))
        }
        Answer::Whole {
            body,
            usage,
            response_id,
        } => {
            let stored = response_id.as_deref().filter(|_| client.stores_response);
            // settle
            let usage =
                bill::usage_or_estimate(usage, context.estimated_prompt_tokens, body.len() as u64);
            // The body leaves only once its charge is committed (DESIGN §6).
            if !bill::settle(state, &context, &served.attempt, usage, stored).await {
                return Err(GatewayError::Internal(
                    "the charge of this request could not be recorded".to_owned(),
                ));
            }
            Ok(Handled::Done(forward::response_with(
                served.status,
                served.headers,
                full(body),
            )))
        }
    }
}
