//! The upstream client's TLS: rustls with the Mozilla roots, and an operator's own roots on top
//! (`MONOIZE_UPSTREAM_CA_FILE`) for upstreams whose certificates a private CA signed: a
//! self-hosted model server, a corporate egress proxy. The file is read once, at start; one that
//! cannot be read, is not PEM, or holds no usable certificate stops the start with its path and
//! the reason, never a gateway that fails on every request later.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the upstream TLS client could not be built: {0}")]
pub struct UpstreamClientError(String);

/// The TLS configuration of upstream connections: the Mozilla roots, plus every certificate of
/// `ca_file` when given. ALPN is left to the connector, which offers `h2` and `http/1.1`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, UpstreamClientError> {
    let roots = root_store(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| UpstreamClientError(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The Mozilla roots and every certificate of `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, UpstreamClientError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for certificate in operator_roots(path)? {
            roots.add(certificate).map_err(|error| {
                UpstreamClientError(format!(
                    "a certificate in the upstream CA file {} is not a usable root: {error}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(roots)
}

/// The certificates of the PEM file at `path`, at least one.
fn operator_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamClientError> {
    let text = std::fs::read(path).map_err(|error| {
        UpstreamClientError(format!(
            "cannot read the upstream CA file {}: {error}",
            path.display()
        ))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            UpstreamClientError(format!(
                "the upstream CA file {} is not valid PEM: {error}",
                path.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(UpstreamClientError(format!(
            "the upstream CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn the_operators_roots_join_the_mozilla_roots() {
        let mozilla = webpki_roots::TLS_SERVER_ROOTS.len();
        assert_eq!(root_store(None).unwrap().len(), mozilla);
        assert_eq!(
            root_store(Some(&fixture("ca.pem"))).unwrap().len(),
            mozilla + 1
        );
        // The connector offers h2 and http/1.1 itself, and refuses a config that already does.
        assert!(client_config(None).unwrap().alpn_protocols.is_empty());
    }

    #[test]
    fn a_missing_unreadable_or_empty_ca_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(
            error.contains("cannot read") && error.contains("missing.pem"),
            "{error}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let error = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");

        // A key is PEM but not a certificate: still no certificate.
        let error = client_config(Some(&fixture("upstream.key")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = client_config(Some(&broken)).unwrap_err().to_string();
        assert!(error.contains("not valid PEM"), "{error}");

        // Well-formed PEM around bytes that are no certificate ("hello world").
        let bogus = dir.path().join("bogus.pem");
        std::fs::write(
            &bogus,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = client_config(Some(&bogus)).unwrap_err().to_string();
        assert!(
            error.contains("not a usable root") && error.contains("bogus.pem"),
            "{error}"
        );
    }
}
