//! Test certificates made with rcgen: a CA and a server certificate for `moat.test` and
//! `localhost`, written as PEM files into a temporary directory.

use rustls::pki_types::CertificateDer;
use std::path::PathBuf;

/// PEM files of a server identity and the CA that signed it.
pub struct TestCerts {
    /// Holds the files alive.
    pub _dir: tempfile::TempDir,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// CA certificate (DER), for client root stores.
    pub ca_der: CertificateDer<'static>,
}

/// Makes a fresh CA and server certificate.
pub fn make() -> TestCerts {
    make_for(&["moat.test", "localhost"])
}

/// Makes a fresh CA and a server certificate for `names`.
pub fn make_for(names: &[&str]) -> TestCerts {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moat test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let paths = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&paths.0, cert.pem()).expect("write cert");
    std::fs::write(&paths.1, key.serialize_pem()).expect("write key");
    std::fs::write(&paths.2, ca_cert.pem()).expect("write ca");
    TestCerts {
        _dir: dir,
        cert: paths.0,
        key: paths.1,
        ca: paths.2,
        ca_der: ca_cert.der().clone(),
    }
}
