//! TLS to the servers the services use: PostgreSQL, RabbitMQ and Redis
//! (docs/security.md, ADR 17).
//!
//! The URL's scheme or parameters turn TLS on
//! (`postgres://…?sslmode=verify-full`, `amqps://…`, `rediss://…`); the
//! server's certificate is then verified against the system's CA store
//! (rustls-native-certs: the image's `/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`) and must name the host of the URL. Managed services
//! signed by a public CA need nothing more. For a private CA, or a server
//! that asks for a client certificate, [`InfraTlsConfig`] names the files
//! (`database_tls.*`, `bus_tls.*`, `presence_tls.*`);
//! [`InfraTlsConfig::load`] reads and checks them once, at start, so a
//! wrong file is reported with its key before anything connects.
//!
//! rustls with ring does the work for all three clients, as for everything
//! else in the process (no OpenSSL, no aws-lc).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// Trust and identity for TLS to one kind of server (`database_tls`,
/// `bus_tls`, `presence_tls`). All empty: the system's CAs only, no client
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfraTlsConfig {
    /// PEM file with the CA certificate(s) the server's certificate may
    /// chain to (a private CA), besides the system's CAs (for Redis:
    /// instead of them). Empty: the system's CAs only.
    pub ca_file: PathBuf,
    /// PEM file with the client certificate (then any intermediates) to
    /// present, for a server that asks for one. Set with `key_file`.
    pub cert_file: PathBuf,
    /// PEM file with the client certificate's private key (PKCS#8, PKCS#1
    /// or SEC1, unencrypted). Set with `cert_file`.
    pub key_file: PathBuf,
}

impl InfraTlsConfig {
    /// With `ca_file` only.
    pub fn trusting(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            ..Self::default()
        }
    }

    /// With a client certificate and its key as well.
    pub fn with_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = cert_file.into();
        self.key_file = key_file.into();
        self
    }

    /// Whether no file is set.
    pub fn is_empty(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .all(|path| path.as_os_str().is_empty())
    }

    /// Reads and checks the files; `key` is the configuration key they are
    /// set under (`bus_tls`), for the error messages.
    pub fn load(&self, key: &str) -> Result<InfraTls, InfraTlsError> {
        let set = |path: &Path| !path.as_os_str().is_empty();
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| InfraTlsError::Read {
                key: format!("{key}.{field}"),
                path: path.to_owned(),
                source,
            })
        };
        let invalid = |field: &'static str, path: &Path, reason: String| InfraTlsError::Invalid {
            key: format!("{key}.{field}"),
            path: path.to_owned(),
            reason,
        };

        let ca = if set(&self.ca_file) {
            let pem = read("ca_file", &self.ca_file)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| invalid("ca_file", &self.ca_file, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid("ca_file", &self.ca_file, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(invalid(
                    "ca_file",
                    &self.ca_file,
                    "no PEM certificate in it".into(),
                ));
            }
            Some(pem)
        } else {
            None
        };

        let identity = match (set(&self.cert_file), set(&self.key_file)) {
            (false, false) => None,
            (true, false) => {
                return Err(InfraTlsError::Incomplete {
                    key: key.to_owned(),
                    missing: "key_file",
                });
            }
            (false, true) => {
                return Err(InfraTlsError::Incomplete {
                    key: key.to_owned(),
                    missing: "cert_file",
                });
            }
            (true, true) => {
                let cert_pem = read("cert_file", &self.cert_file)?;
                let key_pem = read("key_file", &self.key_file)?;
                let certs = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("cert_file", &self.cert_file, e.to_string()))?;
                if certs.is_empty() {
                    return Err(invalid(
                        "cert_file",
                        &self.cert_file,
                        "no PEM certificate in it".into(),
                    ));
                }
                let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("key_file", &self.key_file, e.to_string()))?;
                let provider = rustls::crypto::ring::default_provider();
                CertifiedKey::from_der(certs, private_key, &provider).map_err(|e| {
                    invalid(
                        "key_file",
                        &self.key_file,
                        format!("not the key of {}: {e}", self.cert_file.display()),
                    )
                })?;
                Some(Arc::new(ClientIdentity { cert_pem, key_pem }))
            }
        };

        Ok(InfraTls {
            config: self.clone(),
            ca_pem: ca,
            identity,
        })
    }
}

/// The files of an [`InfraTlsConfig`], read and checked. The default
/// trusts the system's CAs only and presents no certificate.
#[derive(Clone, Default)]
pub struct InfraTls {
    config: InfraTlsConfig,
    ca_pem: Option<Vec<u8>>,
    identity: Option<Arc<ClientIdentity>>,
}

/// A client certificate chain and its key, PEM.
pub struct ClientIdentity {
    /// The certificate, then any intermediates.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for InfraTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfraTls")
            .field("ca_file", &self.config.ca_file)
            .field("cert_file", &self.config.cert_file)
            .finish_non_exhaustive()
    }
}

impl InfraTls {
    /// Whether anything is added to the defaults.
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.identity.is_none()
    }

    /// The files it was read from (clients that read them themselves,
    /// like sqlx, are given the paths).
    pub fn config(&self) -> &InfraTlsConfig {
        &self.config
    }

    /// The private CA certificates, PEM.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// The client certificate and key.
    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.as_deref()
    }
}

/// Why the files of an [`InfraTlsConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InfraTlsError {
    /// One of the client certificate and its key is set, not the other.
    #[error("{key}: set cert_file and key_file together; {missing} is empty")]
    Incomplete {
        /// The configuration key (`bus_tls`).
        key: String,
        /// The empty one.
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The configuration key naming the file (`bus_tls.ca_file`).
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{key}: {}: {reason}", path.display())]
    Invalid {
        /// The configuration key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::testing::Ca;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temporary directory");
            let ca = Ca::new("infra test CA");
            let (cert, key) = ca.issue(&["client"]);
            let (_, other_key) = ca.issue(&["other"]);
            let write = |name: &str, text: &str| {
                std::fs::write(dir.path().join(name), text).expect("write");
            };
            write("ca.crt", &ca.pem);
            write("client.crt", &cert);
            write("client.key", &key);
            write("other.key", &other_key);
            write("garbage.pem", "not a certificate\n");
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    #[test]
    fn nothing_set_loads_as_the_defaults() {
        let tls = InfraTlsConfig::default().load("bus_tls").expect("defaults");
        assert!(tls.is_empty());
        assert!(tls.ca_pem().is_none() && tls.identity().is_none());
    }

    #[test]
    fn a_ca_and_an_identity_load() {
        let pki = Pki::new();
        let tls = InfraTlsConfig::trusting(pki.path("ca.crt"))
            .with_identity(pki.path("client.crt"), pki.path("client.key"))
            .load("bus_tls")
            .expect("files load");
        assert!(!tls.is_empty());
        assert!(tls.ca_pem().is_some());
        assert!(tls.identity().is_some());
    }

    #[test]
    fn wrong_files_are_named_by_their_key() {
        let pki = Pki::new();
        let error = InfraTlsConfig::trusting(pki.path("missing.crt"))
            .load("presence_tls")
            .expect_err("missing file");
        assert!(
            error
                .to_string()
                .starts_with("presence_tls.ca_file: cannot read"),
            "{error}"
        );

        let error = InfraTlsConfig::trusting(pki.path("garbage.pem"))
            .load("bus_tls")
            .expect_err("no certificate");
        assert!(
            error.to_string().contains("bus_tls.ca_file") && error.to_string().contains("no PEM"),
            "{error}"
        );

        let error = InfraTlsConfig {
            cert_file: pki.path("client.crt"),
            ..Default::default()
        }
        .load("database_tls")
        .expect_err("key missing");
        assert_eq!(
            error.to_string(),
            "database_tls: set cert_file and key_file together; key_file is empty"
        );

        let error = InfraTlsConfig::default()
            .with_identity(pki.path("client.crt"), pki.path("other.key"))
            .load("bus_tls")
            .expect_err("key of another certificate");
        assert!(
            error.to_string().starts_with("bus_tls.key_file")
                && error.to_string().contains("not the key of"),
            "{error}"
        );
    }
}
