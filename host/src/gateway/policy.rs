//! The per-key policy, applied after authentication and before routing: its quota, model
//! limits, the IP whitelist, the multiplier ceiling (a request can only lower the key's), and
//! groups. Its product is the [`RouteRequest`] the router sees.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

use super::auth::VerifiedKey;
use super::error::GatewayError;
use crate::cidr::IpRange;
use crate::money::{Multiplier, NanoUsd};
use crate::routing::{EndpointKind, RouteRequest};

/// The header a client may lower its key's multiplier ceiling with.
pub const MAX_MULTIPLIER_HEADER: &str = "x-max-multiplier";

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (the left-most when
/// all are).
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let peer = peer.ip();
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .copied()
        .find(|address| !is_trusted(*address))
        .or_else(|| forwarded.first().copied())
        .unwrap_or(peer)
}

/// The ceiling a request asks for in its `X-Max-Multiplier` header, if any.
pub fn header_ceiling(headers: &HeaderMap) -> Result<Option<Multiplier>, GatewayError> {
    headers
        .get(MAX_MULTIPLIER_HEADER)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<Multiplier>().ok())
                .ok_or_else(|| {
                    GatewayError::BadRequest(
                        "X-Max-Multiplier must be a non-negative decimal".to_owned(),
                    )
                })
        })
        .transpose()
}

/// The lowest of the ceilings given; `None` when none is.
fn lowest(ceilings: impl IntoIterator<Item = Option<Multiplier>>) -> Option<Multiplier> {
    ceilings.into_iter().flatten().min()
}

/// What the policy needs to know about one request.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The logical model asked for.
    pub model: &'a str,
    /// The endpoint it arrived on.
    pub endpoint: EndpointKind,
    /// The client's address (see [`client_address`]).
    pub client: IpAddr,
    /// The ceilings the request asks for (header, body); each can only lower the key's.
    pub requested_ceilings: [Option<Multiplier>; 2],
    /// The key's quota left (see [`super::auth::Authenticator::quota_left`]); `None`: unlimited.
    pub quota_left: Option<NanoUsd>,
}

/// Whether `key` may be used from `client` (its IP whitelist, when it has one).
pub fn check_address(key: &VerifiedKey, client: IpAddr) -> Result<(), GatewayError> {
    if key.ip_whitelist.is_empty() || key.ip_whitelist.iter().any(|range| range.contains(client)) {
        Ok(())
    } else {
        Err(GatewayError::AddressNotAllowed)
    }
}

/// The groups a key's requests are routed within (see [`crate::routing::groups_permit`]).
pub fn key_groups(key: &VerifiedKey) -> Option<Vec<String>> {
    key.group.clone().map(|group| vec![group])
}

/// Applies `key`'s policy to a request and answers what to ask the router.
pub fn apply(key: &VerifiedKey, input: &PolicyInput<'_>) -> Result<RouteRequest, GatewayError> {
    check_address(key, input.client)?;
    if input.quota_left.is_some_and(|left| left <= NanoUsd::ZERO) {
        return Err(GatewayError::KeyQuotaExhausted);
    }
    if let Some(allowed) = &key.model_limits
        && !allowed.iter().any(|model| model == input.model)
    {
        return Err(GatewayError::ModelNotAllowed(input.model.to_owned()));
    }
    let [header, body] = input.requested_ceilings;
    Ok(RouteRequest {
        request_id: input.request_id.to_owned(),
        model: input.model.to_owned(),
        endpoint: input.endpoint,
        max_multiplier: lowest([key.max_multiplier, header, body]),
        groups: key_groups(key),
        seed: seed_of(input.request_id),
    })
}

/// A seed derived from the request id (FNV-1a), so a plan is reproducible from the logs.
fn seed_of(request_id: &str) -> u64 {
    request_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn key() -> VerifiedKey {
        VerifiedKey {
            key_id: "k".into(),
            user_id: "u".into(),
            expires_at: None,
            model_limits: None,
            ip_whitelist: Vec::new(),
            group: None,
            max_multiplier: Some("2".parse().unwrap()),
            quota: None,
        }
    }

    fn input(ceilings: [Option<&str>; 2]) -> PolicyInput<'static> {
        PolicyInput {
            request_id: "r",
            model: "m",
            endpoint: EndpointKind::ChatCompletions,
            client: "10.0.0.1".parse().unwrap(),
            requested_ceilings: ceilings.map(|c| c.map(|c| c.parse().unwrap())),
            quota_left: None,
        }
    }

    #[test]
    fn a_request_can_only_lower_the_ceiling() {
        let lowered = apply(&key(), &input([Some("1.5"), None])).unwrap();
        assert_eq!(lowered.max_multiplier, Some("1.5".parse().unwrap()));
        let raised = apply(&key(), &input([Some("5"), Some("3")])).unwrap();
        assert_eq!(raised.max_multiplier, Some("2".parse().unwrap()));
        let body = apply(&key(), &input([Some("1.5"), Some("1.2")])).unwrap();
        assert_eq!(body.max_multiplier, Some("1.2".parse().unwrap()));
        assert_eq!(body.groups, None);
    }

    #[test]
    fn limits_whitelist_and_groups_apply() {
        let mut limited = key();
        limited.model_limits = Some(vec!["other".into()]);
        assert_eq!(
            apply(&limited, &input([None, None])),
            Err(GatewayError::ModelNotAllowed("m".into()))
        );
        let mut fenced = key();
        fenced.ip_whitelist = vec!["192.168.0.0/16".parse().unwrap()];
        assert_eq!(
            apply(&fenced, &input([None, None])),
            Err(GatewayError::AddressNotAllowed)
        );
        fenced.ip_whitelist.push("10.0.0.0/8".parse().unwrap());
        fenced.group = Some("vip".into());
        let request = apply(&fenced, &input([None, None])).unwrap();
        assert_eq!(request.groups, Some(vec!["vip".to_owned()]));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(client_address(peer, &headers, &[]), peer.ip());
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_address(peer, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer.ip());
    }
}
