//! RFC 8291 section 5 (and appendix A): the worked example, byte for byte.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;

const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const AS_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
const NONCE: &str = "4h_95klXJ5E_qnoN";
const HEADER: &str =
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
const CIPHERTEXT: &str = "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ";

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("test vectors are base64url")
}

fn receiver() -> ReceiverKeys {
    ReceiverKeys {
        public: PublicKey::from_sec1_bytes(&b64(UA_PUBLIC)).expect("UA public key"),
        auth: b64(AUTH).try_into().expect("16 octets"),
    }
}

fn sender() -> SecretKey {
    SecretKey::from_slice(&b64(AS_PRIVATE)).expect("AS private key")
}

fn salt() -> [u8; 16] {
    b64(SALT).try_into().expect("16 octets")
}

#[test]
fn the_sender_key_of_the_example_is_the_one_in_its_header() {
    assert_eq!(sender().public_key().to_sec1_point(false).as_bytes(), b64(AS_PUBLIC).as_slice());
}

#[test]
fn the_content_key_and_nonce_are_those_of_the_example() {
    let public = b64(AS_PUBLIC);
    let (cek, nonce) = derive(&receiver(), &sender(), &public, &salt()).expect("derive");
    assert_eq!(URL_SAFE_NO_PAD.encode(cek), CEK);
    assert_eq!(URL_SAFE_NO_PAD.encode(nonce), NONCE);
}

#[test]
fn the_message_is_the_example_byte_for_byte() {
    let body = encrypt_with(PLAINTEXT.as_bytes(), &receiver(), &sender(), &salt()).expect("encrypt");
    let mut expected = b64(HEADER);
    assert_eq!(expected.len(), HEADER_LEN);
    expected.extend(b64(CIPHERTEXT));
    assert_eq!(body, expected);
}

/// The browser's side: what a user agent holding `UA_PRIVATE` does.
fn decrypt(body: &[u8], ua_private: &SecretKey, auth: &[u8; 16]) -> Vec<u8> {
    let salt: [u8; 16] = body[..16].try_into().expect("salt");
    assert_eq!(u32::from_be_bytes(body[16..20].try_into().expect("rs")), RECORD_SIZE);
    assert_eq!(body[20], 65);
    let sender_public = PublicKey::from_sec1_bytes(&body[21..86]).expect("sender key");
    let shared = p256::ecdh::diffie_hellman(ua_private.to_nonzero_scalar(), sender_public.as_affine());
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_private.public_key().to_sec1_point(false).as_bytes());
    key_info.extend_from_slice(&body[21..86]);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes()).expand(&key_info, &mut ikm).expect("ikm");
    let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).expect("cek");
    content.expand(b"Content-Encoding: nonce\0", &mut nonce).expect("nonce");
    let mut record = Aes128Gcm::new_from_slice(&cek)
        .expect("key")
        .decrypt(&nonce.into(), &body[86..])
        .expect("the record authenticates");
    assert_eq!(record.pop(), Some(2), "one final record ends with the delimiter 0x02");
    record
}

#[test]
fn the_example_decrypts_with_the_browser_key() {
    let mut body = b64(HEADER);
    body.extend(b64(CIPHERTEXT));
    let ua = SecretKey::from_slice(&b64(UA_PRIVATE)).expect("UA private key");
    assert_eq!(ua.public_key(), receiver().public);
    assert_eq!(decrypt(&body, &ua, &receiver().auth), PLAINTEXT.as_bytes());
}

#[test]
fn fresh_keys_and_salt_each_time_and_the_browser_still_decrypts() {
    let ua = SecretKey::try_generate().expect("random");
    let to = ReceiverKeys { public: ua.public_key(), auth: [7; 16] };
    let a = encrypt(b"{\"hello\":1}", &to).expect("encrypt");
    let b = encrypt(b"{\"hello\":1}", &to).expect("encrypt");
    assert_ne!(a[..16], b[..16], "a new salt per message");
    assert_ne!(a[21..86], b[21..86], "a new sender key per message");
    assert_eq!(decrypt(&a, &ua, &to.auth), b"{\"hello\":1}");
    assert_eq!(a.len(), HEADER_LEN + 11 + 1 + 16);
}

#[test]
fn a_payload_past_one_record_is_refused() {
    let to = receiver();
    assert!(encrypt(&vec![b'x'; MAX_PLAINTEXT], &to).is_ok());
    assert!(
        matches!(encrypt(&vec![b'x'; MAX_PLAINTEXT + 1], &to), Err(EceError::TooLarge(n)) if n == MAX_PLAINTEXT + 1)
    );
    assert_eq!(MAX_PLAINTEXT, 3993);
}
