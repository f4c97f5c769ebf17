//! The upstream client's way out: straight to the upstream, or through the operator's HTTP
//! proxy (`MONOIZE_UPSTREAM_PROXY`) by a `CONNECT` tunnel, except to the hosts of
//! `MONOIZE_UPSTREAM_NO_PROXY`. The tunnel carries the upstream's own TLS, so the proxy sees
//! only where a connection goes, never what it carries; the proxy's credentials go in the
//! `CONNECT` request's `Proxy-Authorization` alone. Plain-`http` upstreams are tunnelled too
//! (to their port, 80 by default): an internal upstream is usually better named in
//! `MONOIZE_UPSTREAM_NO_PROXY`.
//!
//! A proxy that cannot be reached or refuses the tunnel (`407`, `403`) fails the connection,
//! which the forward phase counts as `connection_failed` and moves past, as any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::UpstreamProxy;

/// Why a connection could not be made (the connector's or the tunnel's error).
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to upstreams, through the proxy where one applies. Cheap to clone.
#[derive(Clone)]
pub struct EgressConnector {
    direct: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

impl std::fmt::Debug for EgressConnector {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("EgressConnector")
            .field("proxied", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl EgressConnector {
    /// Connects with `direct`, through `proxy` when given.
    pub fn new(direct: HttpConnector, proxy: Option<&UpstreamProxy>) -> EgressConnector {
        let proxy = proxy.map(|proxy| {
            Arc::new(
                Matcher::builder()
                    .all(proxy.url().to_owned())
                    .no(proxy.no_proxy().to_owned())
                    .build(),
            )
        });
        EgressConnector { direct, proxy }
    }
}

impl tower_service::Service<Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.direct.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let intercept = self
            .proxy
            .as_ref()
            .and_then(|matcher| matcher.intercept(&destination));
        let Some(intercept) = intercept else {
            let connecting = self.direct.call(destination);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        // The tunnel is ready when its connector is, and `HttpConnector` always is.
        let mut tunnel = Tunnel::new(intercept.uri().clone(), self.direct.clone());
        if let Some(credentials) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(credentials.clone());
        }
        Box::pin(async move {
            // The tunnel asks for 443 when the destination names no port, whatever its scheme.
            let destination = with_default_port(destination)?;
            tunnel.call(destination).await.map_err(Into::into)
        })
    }
}

/// `destination` with its scheme's port written out (80 for `http`, 443 for `https`).
fn with_default_port(destination: Uri) -> Result<Uri, ConnectError> {
    if destination.port().is_some() {
        return Ok(destination);
    }
    let port = match destination.scheme_str() {
        Some("http") => 80,
        _ => 443,
    };
    let host = destination.host().ok_or("an upstream URL without a host")?;
    let mut parts = destination.clone().into_parts();
    parts.authority = Some(format!("{host}:{port}").parse()?);
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_without_a_port_gets_its_schemes() {
        let port = |uri: &str| with_default_port(uri.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            port("http://upstream.internal/v1/x"),
            "http://upstream.internal:80/v1/x"
        );
        assert_eq!(
            port("https://api.openai.com/v1"),
            "https://api.openai.com:443/v1"
        );
        assert_eq!(
            port("https://127.0.0.1:8443/v1"),
            "https://127.0.0.1:8443/v1"
        );
        assert_eq!(port("http://[::1]/v1"), "http://[::1]:80/v1");
    }

    #[test]
    fn only_hosts_outside_no_proxy_are_tunnelled() {
        let proxy = UpstreamProxy::new(
            "http://user:secret@proxy.internal:3128",
            "localhost, .corp.example, 10.0.0.0/8",
        )
        .unwrap();
        let connector = EgressConnector::new(HttpConnector::new(), Some(&proxy));
        let matcher = connector.proxy.as_ref().unwrap();
        let intercepted = |uri: &str| matcher.intercept(&uri.parse().unwrap()).is_some();
        assert!(intercepted("https://api.openai.com/v1"));
        assert!(intercepted("http://upstream.example/v1"));
        assert!(!intercepted("http://localhost:8000/v1"));
        assert!(!intercepted("https://llm.corp.example/v1"));
        assert!(!intercepted("http://10.1.2.3:8000/v1"));
        let intercept = matcher
            .intercept(&"https://api.openai.com/v1".parse().unwrap())
            .unwrap();
        assert_eq!(intercept.uri().host(), Some("proxy.internal"));
        // Basic user:secret, sent only in the CONNECT request.
        assert_eq!(intercept.basic_auth().unwrap(), "Basic dXNlcjpzZWNyZXQ=");
        assert!(!format!("{connector:?}").contains("secret"));
    }
}
