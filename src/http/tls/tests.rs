use super::*;

/// A self-signed pair for `names`: (certificate PEM, key PEM, certificate DER).
fn pair(names: &[&str]) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names).expect("params").self_signed(&key).expect("sign");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// A fresh directory under the system's temporary directory.
fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sidecar-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert).expect("write cert");
    std::fs::write(&k, key).expect("write key");
    (c, k)
}

fn load(cert: &Path, key: &Path) -> Result<CertFiles, TlsError> {
    CertFiles::load(cert, key, Arc::new(rustls::crypto::ring::default_provider()), Duration::ZERO)
}

fn leaf(files: &CertFiles) -> Vec<u8> {
    files.current().cert[0].to_vec()
}

#[test]
fn serves_the_files_and_follows_their_changes() {
    let d = dir();
    let (a_cert, a_key, a_der) = pair(&["localhost"]);
    let (cert, key) = write(&d, &a_cert, &a_key);
    let files = load(&cert, &key).expect("a good pair loads");
    assert_eq!(leaf(&files), a_der);

    let (b_cert, b_key, b_der) = pair(&["localhost", "sidecar.example.com"]);
    write(&d, &b_cert, &b_key);
    assert_eq!(leaf(&files), b_der, "a changed pair is served at the next handshake");

    // A broken certificate keeps the previous pair...
    std::fs::write(&cert, "not a certificate").expect("write");
    assert_eq!(leaf(&files), b_der);
    // ...and so does a certificate that belongs to another key.
    let (c_cert, _, _) = pair(&["other.example.com"]);
    std::fs::write(&cert, &c_cert).expect("write");
    assert_eq!(leaf(&files), b_der);
    // Fixed: served again.
    let (d_cert, d_key, d_der) = pair(&["localhost", "d.example.com", "d2.example.com"]);
    write(&d, &d_cert, &d_key);
    assert_eq!(leaf(&files), d_der);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn looks_at_the_files_at_most_once_per_interval() {
    let d = dir();
    let (a_cert, a_key, a_der) = pair(&["localhost"]);
    let (cert, key) = write(&d, &a_cert, &a_key);
    let files =
        CertFiles::load(&cert, &key, Arc::new(rustls::crypto::ring::default_provider()), Duration::from_secs(3600))
            .expect("loads");
    let (b_cert, b_key, _) = pair(&["localhost", "b.example.com"]);
    write(&d, &b_cert, &b_key);
    assert_eq!(leaf(&files), a_der, "not looked at again within the interval");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_files_at_start_name_their_setting() {
    let d = dir();
    let (a_cert, a_key, _) = pair(&["localhost"]);
    let (b_cert, b_key, _) = pair(&["localhost"]);

    let (cert, key) = write(&d, &a_cert, &b_key);
    let e = load(&cert, &key).expect_err("mismatched pair").to_string();
    assert!(e.starts_with("SIDECAR_TLS_CERT_FILE: ") && e.contains("does not match the key"), "{e}");

    let (cert, key) = write(&d, "plain text, no PEM block", &a_key);
    let e = load(&cert, &key).expect_err("no certificate").to_string();
    assert!(e.starts_with("SIDECAR_TLS_CERT_FILE: ") && e.contains("no PEM CERTIFICATE"), "{e}");

    // A certificate where the key should be.
    let (cert, key) = write(&d, &b_cert, &b_cert);
    let e = load(&cert, &key).expect_err("no key").to_string();
    assert!(e.starts_with("SIDECAR_TLS_KEY_FILE: ") && e.contains("no PEM private key"), "{e}");

    let (cert, key) = write(&d, "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", &a_key);
    let e = load(&cert, &key).expect_err("bad base64").to_string();
    assert!(e.starts_with("SIDECAR_TLS_CERT_FILE: ") && e.contains("not valid PEM"), "{e}");

    let (cert, key) = write(&d, &a_cert, &a_key);
    let e = load(&cert, &d.join("missing.key")).expect_err("missing file").to_string();
    assert!(e.starts_with("SIDECAR_TLS_KEY_FILE: cannot read "), "{e}");
    let e = load(&d.join("missing.crt"), &key).expect_err("missing file").to_string();
    assert!(e.starts_with("SIDECAR_TLS_CERT_FILE: cannot read "), "{e}");
    load(&cert, &key).expect("the good pair still loads");
    std::fs::remove_dir_all(&d).ok();
}
