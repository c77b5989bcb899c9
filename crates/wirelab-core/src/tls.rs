//! TLS for every TCP transport: a self-signed certificate made at start-up (or PEM files),
//! rustls configs with the right ALPN, and `SSLKEYLOGFILE` support so captures can be decrypted.
//!
//! Only the `ring` provider is compiled in; configs are built with it explicitly, never through
//! the process-wide default.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, KeyLogFile, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// ALPN id of HTTP/1.1, used by `ws` and `h1`.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN id of HTTP/2 over TLS, used by `h2` and `h2ws`.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/3, used by `h3`.
pub const ALPN_H3: &[u8] = b"h3";
/// ALPN id of the raw QUIC floor, `quic`: wirelab's own protocol, not a registered one.
pub const ALPN_WIRELAB_QUIC: &[u8] = b"wirelab-quic/1";

/// The crypto provider every config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// A certificate chain with its private key.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The DER SubjectPublicKeyInfo of a certificate made here (not of one read from files).
    spki: Option<Vec<u8>>,
}

impl Identity {
    /// A fresh self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> Result<Self> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&ck.signing_key);
        Ok(Self {
            chain: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
            spki: Some(spki),
        })
    }

    /// The certificate chain and key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(Error::Tls(format!(
                "{}: no certificate found",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
        Ok(Self {
            chain,
            key,
            spki: None,
        })
    }

    /// The leaf certificate, for clients that should trust exactly this server.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.chain[0].clone()
    }

    /// Base64 of the SHA-256 of the certificate's public key (its DER SubjectPublicKeyInfo),
    /// what Chromium's `--ignore-certificate-errors-spki-list` takes; `None` for an identity
    /// read from files.
    pub fn spki_sha256_base64(&self) -> Option<String> {
        let spki = self.spki.as_ref()?;
        Some(base64_encode(
            ring::digest::digest(&ring::digest::SHA256, spki).as_ref(),
        ))
    }

    /// The leaf certificate as PEM text.
    pub fn certificate_pem(&self) -> String {
        use std::fmt::Write;
        let b64 = base64_encode(&self.chain[0]);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    /// A server config offering `alpn`, with `SSLKEYLOGFILE` honoured.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg.key_log = Arc::new(KeyLogFile::new());
        Ok(Arc::new(cfg))
    }
}

/// Which servers a client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly these certificates (e.g. the self-signed one a local server printed).
    Certificates(Vec<CertificateDer<'static>>),
    /// The certificates in a PEM file.
    PemFile(std::path::PathBuf),
    /// Any certificate. For lab use against a self-signed server whose certificate you do not
    /// have; the handshake signature is still verified.
    InsecureAnyCertificate,
    /// Exactly the certificate with this SHA-256 fingerprint ([`fingerprint`]), whatever names
    /// it holds: for a remote lab server reached by an address its self-signed certificate
    /// does not name. The handshake signature is verified with that certificate's key.
    Fingerprint([u8; 32]),
}

/// The SHA-256 fingerprint of a certificate (its DER bytes).
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cert);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A fingerprint as colon-separated uppercase hex pairs (`AB:CD:...`), as `openssl x509
/// -fingerprint -sha256` prints it.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    let pairs: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// Parses a fingerprint written as 64 hex digits, with or without colons.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let bad = || {
        Error::Config(format!(
            "'{s}' is not a SHA-256 fingerprint (64 hex digits)"
        ))
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A client config offering `alpn`, with `SSLKEYLOGFILE` honoured.
pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let certs = match trust {
        Trust::Certificates(c) => Some(c.clone()),
        Trust::PemFile(p) => Some(
            CertificateDer::pem_file_iter(p)
                .map_err(|e| Error::Tls(format!("{}: {e}", p.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls(format!("{}: {e}", p.display())))?,
        ),
        Trust::InsecureAnyCertificate | Trust::Fingerprint(_) => None,
    };
    let pin = match trust {
        Trust::Fingerprint(fp) => Some(*fp),
        _ => None,
    };
    let mut cfg = match certs {
        Some(certs) => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(tls_err)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider(), pin)))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.key_log = Arc::new(KeyLogFile::new());
    Ok(Arc::new(cfg))
}

/// Accepts any certificate, or only the one with the pinned fingerprint, and still checks the
/// handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>, Option<[u8; 32]>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.1 {
            Some(pin) if fingerprint(end_entity) != pin => Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 fingerprint {}, not the pinned {}",
                fingerprint_hex(&fingerprint(end_entity)),
                fingerprint_hex(&pin)
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
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

/// Standard base64 with padding (for PEM output; avoids a dependency for 20 lines).
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash Chromium's `--ignore-certificate-errors-spki-list` takes: base64 of 32 bytes,
    /// the SHA-256 of the DER SubjectPublicKeyInfo, which the certificate itself contains.
    #[test]
    fn spki_hash_is_of_the_certificates_public_key() {
        let id = Identity::self_signed(&["localhost"]).unwrap();
        let h = id.spki_sha256_base64().unwrap();
        assert_eq!(h.len(), 44);
        assert!(h.ends_with('='));
        let spki = id.spki.as_ref().unwrap();
        let cert: &[u8] = &id.certificate();
        assert!(cert.windows(spki.len()).any(|w| w == spki.as_slice()));
        let other = Identity::self_signed(&["localhost"]).unwrap();
        assert_ne!(other.spki_sha256_base64().unwrap(), h);
    }

    #[test]
    fn base64_known_answers() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn self_signed_pem_round_trips_into_a_client_config() {
        let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let dir = std::env::temp_dir().join(format!("wirelab-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, id.certificate_pem()).unwrap();
        client_config(&Trust::PemFile(path.clone()), &[ALPN_HTTP11]).unwrap();
        id.server_config(&[ALPN_HTTP11]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_pem_file_is_a_clear_error() {
        let e =
            Identity::from_pem_files(Path::new("/nonexistent/c.pem"), Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn fingerprint_known_answer_and_round_trip() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let fp = fingerprint(&CertificateDer::from(b"abc".to_vec()));
        let hex = fingerprint_hex(&fp);
        assert!(hex.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{hex}");
        assert_eq!(parse_fingerprint(&hex).unwrap(), fp);
        assert_eq!(
            parse_fingerprint(&hex.replace(':', "").to_lowercase()).unwrap(),
            fp
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    /// A TLS handshake over an in-memory pipe; the client trusts `trust` and names a host the
    /// certificate does not hold, as a client of a remote lab server does.
    async fn handshake(server: &Identity, trust: Trust) -> std::io::Result<()> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config(&[ALPN_H2]).unwrap());
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&trust, &[ALPN_H2]).unwrap());
        let name = ServerName::try_from("198.18.0.2").unwrap();
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(drop) });
        let cli = connector.connect(name, a).await.map(drop);
        let _ = srv.await;
        cli
    }

    #[tokio::test]
    async fn a_pinned_fingerprint_trusts_that_certificate_only() {
        let id = Identity::self_signed(&["localhost"]).unwrap();
        let other = Identity::self_signed(&["localhost"]).unwrap();
        let pin = fingerprint(&id.certificate());
        handshake(&id, Trust::Fingerprint(pin)).await.unwrap();
        let e = handshake(&other, Trust::Fingerprint(pin))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not the pinned"), "{e}");
        // The same certificate by CA trust fails on the name it does not hold.
        let e = handshake(&id, Trust::Certificates(vec![id.certificate()]))
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("name"), "{e}");
    }
}
