//! TLS settings for `amqps://` brokers: extra CA certificates, and a client certificate when the
//! broker asks for one. Certificates and keys are read from files named in the configuration.

use std::path::Path;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

use crate::config::{BrokerConfig, ConfigError};

/// What lapin's TLS connector needs from `[broker] tls_*`.
pub fn tls_config(broker: &BrokerConfig) -> Result<OwnedTLSConfig, ConfigError> {
    let cert_chain = broker.tls_ca_file.as_deref().map(|path| read_pem(path, "CERTIFICATE")).transpose()?;
    let identity = match (&broker.tls_cert_file, &broker.tls_key_file) {
        (Some(cert), Some(key)) => Some(identity(cert, key)?),
        (None, None) => None,
        (Some(path), None) | (None, Some(path)) => {
            return Err(tls_error(path, "tls_cert_file and tls_key_file go together: set both or neither"));
        }
    };
    Ok(OwnedTLSConfig { identity, cert_chain })
}

fn tls_error(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Tls { path: path.to_owned(), message: message.into() }
}

fn read_pem(path: &Path, label: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| tls_error(path, e.to_string()))?;
    if !text.contains(&format!("-----BEGIN {label}-----")) {
        return Err(tls_error(path, format!("no PEM {label} in it")));
    }
    Ok(text)
}

/// lapin takes a client identity only as PKCS#12; operators have PEM files. Package them in
/// memory under a throwaway password.
fn identity(cert_path: &Path, key_path: &Path) -> Result<OwnedIdentity, ConfigError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};

    let certs_text = read_pem(cert_path, "CERTIFICATE")?;
    let chain = rustls_pemfile::certs(&mut certs_text.as_bytes())
        .map(|c| {
            let der = c.map_err(|e| tls_error(cert_path, e.to_string()))?;
            Certificate::from_der(&der).map_err(|e| tls_error(cert_path, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_text = std::fs::read_to_string(key_path).map_err(|e| tls_error(key_path, e.to_string()))?;
    // Never quote the key file in an error: only say what kind of thing was missing.
    let key = match rustls_pemfile::private_key(&mut key_text.as_bytes()) {
        Ok(Some(rustls_pki_types::PrivateKeyDer::Pkcs8(der))) => der.secret_pkcs8_der().to_vec(),
        Ok(Some(_)) => return Err(tls_error(key_path, "the key must be PKCS#8 (BEGIN PRIVATE KEY); convert it with `openssl pkcs8 -topk8 -nocrypt`")),
        _ => return Err(tls_error(key_path, "no PEM private key in it")),
    };
    let mut store = KeyStore::new();
    store.add_entry("docpipe", KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key, b"docpipe", chain)));
    let password = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let der = store.writer(&password).write().map_err(|e| tls_error(cert_path, e.to_string()))?;
    Ok(OwnedIdentity::PKCS12 { der, password })
}
