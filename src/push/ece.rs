//! RFC 8291 message encryption for Web Push: ECDH on P-256 between a fresh
//! application-server key and the browser's key, HKDF-SHA-256 mixed with
//! the browser's auth secret, then one AES-128-GCM record of the
//! `aes128gcm` content coding (RFC 8188), record size 4096.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::elliptic_curve::Generate;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size written in the header: the one value RFC 8291 allows
/// a single-record message to use with a 4096-octet push service limit.
pub(crate) const RECORD_SIZE: u32 = 4096;

/// Header of the `aes128gcm` coding with a 65-octet key id: salt (16),
/// record size (4), key id length (1), the sender's public key (65).
pub(super) const HEADER_LEN: usize = 86;

/// Largest plaintext one push message carries: 4096 octets, less the
/// header, the padding delimiter and the GCM tag (RFC 8291 section 4).
pub(crate) const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - 1 - 16;

/// Why a payload could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EceError {
    /// The plaintext does not fit one record.
    #[error("the push payload is {0} octets, more than {MAX_PLAINTEXT}")]
    TooLarge(usize),
    /// The system random source failed.
    #[error("no randomness for the push encryption: {0}")]
    Random(String),
    /// A derivation or the cipher refused its input (cannot happen with
    /// the fixed lengths used here; kept typed rather than a panic).
    #[error("push encryption failed: {0}")]
    Crypto(&'static str),
}

/// The keys a browser hands out in its `PushSubscription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiverKeys {
    /// `p256dh`: the browser's P-256 public key.
    pub public: PublicKey,
    /// `auth`: 16 secret octets shared with the application server.
    pub auth: [u8; 16],
}

/// Encrypts `plaintext` for `to` with a fresh key pair and salt: the body
/// of the push message, header included.
pub(crate) fn encrypt(plaintext: &[u8], to: &ReceiverKeys) -> Result<Vec<u8>, EceError> {
    let sender = SecretKey::try_generate().map_err(|e| EceError::Random(e.to_string()))?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| EceError::Random(e.to_string()))?;
    encrypt_with(plaintext, to, &sender, &salt)
}

/// [`encrypt`] with a given sender key and salt: what makes RFC 8291's
/// worked example reproducible.
pub(super) fn encrypt_with(
    plaintext: &[u8],
    to: &ReceiverKeys,
    sender: &SecretKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge(plaintext.len()));
    }
    let sender_public = sender.public_key().to_sec1_point(false);
    let sender_public = sender_public.as_bytes();
    let (cek, nonce) = derive(to, sender, sender_public, salt)?;
    // One record, the last: the plaintext, then the delimiter 0x02, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| EceError::Crypto("content key length"))?;
    let sealed =
        cipher.encrypt(&nonce.into(), record.as_slice()).map_err(|_| EceError::Crypto("AES-GCM refused the record"))?;
    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(sender_public.len() as u8);
    body.extend_from_slice(sender_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// The content-encryption key and nonce (RFC 8291 section 3.4).
fn derive(
    to: &ReceiverKeys,
    sender: &SecretKey,
    sender_public: &[u8],
    salt: &[u8; 16],
) -> Result<([u8; 16], [u8; 12]), EceError> {
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), to.public.as_affine());
    let receiver_public = to.public.to_sec1_point(false);
    // key_info = "WebPush: info" || 0x00 || ua_public || as_public
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(receiver_public.as_bytes());
    key_info.extend_from_slice(sender_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&to.auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| EceError::Crypto("IKM length"))?;
    let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| EceError::Crypto("CEK length"))?;
    let mut nonce = [0u8; 12];
    content.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| EceError::Crypto("nonce length"))?;
    Ok((cek, nonce))
}

#[cfg(test)]
mod tests;
