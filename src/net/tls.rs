//! PEM files -> rustls configs. The only place rustls is set up: TLS 1.2 and 1.3 only, the
//! aws-lc-rs provider, for STARTTLS towards clients and towards the upstream.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors loading certificates and keys; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("{path}: certificate and key do not form a usable TLS identity: {source}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            why: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.into(),
        why: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            why: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The certificate and key moat presents, reloadable: `reload` (on SIGHUP) reads the files
/// again and, if they form a usable identity, new handshakes use it; sessions already
/// encrypted keep theirs, and a broken file keeps the previous certificate.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// `[[tls.sni]]`: names, certificate file, key file.
    sni: Vec<crate::config::SniCert>,
    current: std::sync::RwLock<Identities>,
}

/// The loaded identities: the default one and those chosen by SNI name (lowercase).
#[derive(Debug)]
struct Identities {
    default: Arc<rustls::sign::CertifiedKey>,
    by_name: std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>,
}

impl ServerCert {
    fn load(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let certs = load_certs(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            path: key.into(),
            why: format!("no usable private key: {e}"),
        })?;
        rustls::sign::CertifiedKey::from_der(certs, key_der, &provider()).map_err(|source| {
            TlsError::Identity {
                path: cert.into(),
                source,
            }
        })
    }

    /// Loads every identity; one bad file fails them all, so a reload is all or nothing.
    fn load_all(
        cert: &Path,
        key: &Path,
        sni: &[crate::config::SniCert],
    ) -> Result<Identities, TlsError> {
        let mut by_name = std::collections::HashMap::new();
        for s in sni {
            let identity = Arc::new(Self::load(&s.cert, &s.key)?);
            for name in &s.names {
                by_name.insert(
                    name.trim_end_matches('.').to_ascii_lowercase(),
                    identity.clone(),
                );
            }
        }
        Ok(Identities {
            default: Arc::new(Self::load(cert, key)?),
            by_name,
        })
    }

    /// Reads the files again; on success new handshakes present the new certificates.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Self::load_all(&self.cert_path, &self.key_path, &self.sni)?;
        if let Ok(mut current) = self.current.write() {
            *current = fresh;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let current = self.current.read().ok()?;
        let named = hello
            .server_name()
            .and_then(|n| current.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&current.default).clone())
    }
}

/// Builds the server config for STARTTLS from a PEM chain and key, with the handle that
/// reloads them.
pub fn server_config(
    cert: &Path,
    key: &Path,
    sni: &[crate::config::SniCert],
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerCert>), TlsError> {
    let resolver = Arc::new(ServerCert {
        current: std::sync::RwLock::new(ServerCert::load_all(cert, key, sni)?),
        cert_path: cert.into(),
        key_path: key.into(),
        sni: sni.to_vec(),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Identity {
            path: cert.into(),
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    Ok((Arc::new(config), resolver))
}

/// Builds the client config for STARTTLS to the upstream: verified against `ca`, or (for a
/// loopback hop to an MTA with a self-signed certificate) encrypted without verification.
pub fn client_config(
    ca: Option<&Path>,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Identity {
            path: PathBuf::new(),
            source,
        })?;
    let config = match (verify, ca) {
        (true, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|source| TlsError::Identity {
                    path: ca.into(),
                    source,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any upstream certificate but still checks handshake signatures, so the session is
/// encrypted; used only when the admin turned `upstream.tls_verify` off.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A short, bounded label for why a client's TLS handshake failed, for the metric (the log
/// line keeps the full error).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::PeerIncompatible(_)) => "incompatible",
        Some(rustls::Error::AlertReceived(_)) => "alert_received",
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. })
        | Some(rustls::Error::InappropriateHandshakeMessage { .. })
        | Some(rustls::Error::PeerMisbehaved(_)) => "protocol",
        Some(rustls::Error::InvalidCertificate(_))
        | Some(rustls::Error::NoCertificatesPresented) => "certificate",
        Some(_) => "other",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}
