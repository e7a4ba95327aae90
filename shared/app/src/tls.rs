//! The trust roots of every HTTPS client in a function (the AWS SDK's and the Daraja client's),
//! read from the system once per process.
//!
//! Left to themselves, each client loads the system store at start, and rustls-native-certs reads
//! the bundle *and* every file of the certificate directory openssl-probe finds (on Debian, ~146
//! files holding the same certificates): two clients parsed ~290 certificates twice per cold start
//! (BENCHMARKS.md). Here the roots are, in this order: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set
//! (as OpenSSL honours them), else the system bundle alone, else the whole native store.

use std::collections::HashSet;
use std::path::Path;
use std::sync::LazyLock;

use base64::Engine;
use rustls_pki_types::CertificateDer;

static SYSTEM: LazyLock<TrustRoots> = LazyLock::new(|| {
    let roots = system_bundle().unwrap_or_else(native_store);
    if roots.is_empty() {
        tracing::warn!("no usable trust roots found: HTTPS requests will fail");
    }
    roots
});

/// The system's trust roots, loaded at the first call.
pub fn system_roots() -> &'static TrustRoots {
    &SYSTEM
}

/// Certificates a verifier can anchor trust in, each once.
#[derive(Debug, Clone, Default)]
pub struct TrustRoots {
    certs: Vec<CertificateDer<'static>>,
}

impl TrustRoots {
    /// Keeps the certificates that parse as trust anchors, dropping repeats.
    pub fn new(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Self {
        let mut seen = HashSet::new();
        let certs = certs
            .into_iter()
            .filter(|cert| webpki::anchor_from_trusted_cert(cert).is_ok())
            .filter(|cert| seen.insert(cert.as_ref().to_vec()))
            .collect();
        Self { certs }
    }

    /// The certificates of a PEM file (a bundle), ignoring anything else in it.
    pub fn from_pem_file(path: &Path) -> Option<Self> {
        Some(Self::from_pem(&std::fs::read(path).ok()?))
    }

    /// The `CERTIFICATE` blocks of PEM text, ignoring anything else in it.
    ///
    /// Decoded with the ordinary base64 decoder: roots are public, so the constant-time decoder
    /// the PEM parsers use for keys buys nothing (1.2 ms for Debian's 220 kB bundle, against
    /// 0.5 ms).
    pub fn from_pem(text: &[u8]) -> Self {
        let mut certs = Vec::new();
        let mut body: Option<Vec<u8>> = None;
        for line in text.split(|b| *b == b'\n').map(<[u8]>::trim_ascii) {
            match (&mut body, line) {
                (None, b"-----BEGIN CERTIFICATE-----") => body = Some(Vec::with_capacity(2048)),
                (Some(base64), b"-----END CERTIFICATE-----") => {
                    if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(base64) {
                        certs.push(CertificateDer::from(der));
                    }
                    body = None;
                }
                (Some(base64), _) => base64.extend_from_slice(line),
                (None, _) => {}
            }
        }
        Self::new(certs)
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The roots as one PEM bundle (what the AWS SDK's trust store takes).
    pub fn to_pem(&self) -> Vec<u8> {
        let mut pem = String::new();
        for cert in &self.certs {
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                // Base64 is ASCII, so every chunk is valid UTF-8.
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }
}

/// The bundle file openssl-probe finds, unless the environment names the roots.
fn system_bundle() -> Option<TrustRoots> {
    if openssl_probe::has_ssl_cert_env_vars() {
        return None;
    }
    let roots = TrustRoots::from_pem_file(&openssl_probe::probe().cert_file?)?;
    (!roots.is_empty()).then_some(roots)
}

fn native_store() -> TrustRoots {
    let result = rustls_native_certs::load_native_certs();
    if !result.errors.is_empty() {
        tracing::warn!(errors = ?result.errors, "some system trust roots could not be read");
    }
    TrustRoots::new(result.certs)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    /// The test certificate authority (`tests/data/gen.sh`).
    const ROOT_PEM: &[u8] = include_bytes!("../tests/data/test-ca.pem");

    fn root() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(ROOT_PEM).expect("a PEM certificate")
    }

    #[test]
    fn repeats_and_certificates_that_are_not_anchors_are_dropped() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let roots = TrustRoots::new([root(), garbage, root()]);
        assert_eq!(roots.certs(), &[root()]);
    }

    #[test]
    fn the_pem_bundle_holds_the_same_certificates() {
        let roots = TrustRoots::new([root()]);
        let back: Vec<_> = CertificateDer::pem_slice_iter(&roots.to_pem())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(back, vec![root()]);
        assert!(roots
            .to_pem()
            .split(|b| *b == b'\n')
            .all(|line| line.len() <= 64));
    }

    #[test]
    fn pem_blocks_other_than_certificates_and_broken_ones_are_skipped() {
        let mut text = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec();
        text.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        text.extend_from_slice(ROOT_PEM);
        text.extend_from_slice(b"-----BEGIN CERTIFICATE-----\nMIIB"); // cut short
        assert_eq!(TrustRoots::from_pem(&text).certs(), &[root()]);
    }

    #[test]
    fn a_bundle_file_is_read_whole_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("tls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bundle = dir.join("bundle.pem");
        let mut text = b"# comment lines are ignored\n".to_vec();
        text.extend_from_slice(ROOT_PEM);
        text.extend_from_slice(ROOT_PEM);
        std::fs::write(&bundle, text).expect("write bundle");
        let roots = TrustRoots::from_pem_file(&bundle).expect("readable");
        assert_eq!(roots.len(), 1);
        assert!(TrustRoots::from_pem_file(&dir.join("missing.pem")).is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
