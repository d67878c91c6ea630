//! The handshake: the first record a client sends, naming its hub protocol.

use serde::{Deserialize, Serialize};

use super::{Error, Protocol, RECORD_SEPARATOR};

/// `{"protocol":"json","version":1}` as the client sends it.
#[derive(Debug, Deserialize)]
pub struct HandshakeRequest {
    /// The hub protocol name, e.g. `json` or `messagepack`.
    pub protocol: String,
    /// The protocol version; 1 for both protocols today.
    pub version: u32,
}

impl HandshakeRequest {
    /// Parses a handshake record (without its separator) and picks the protocol.
    pub fn parse(record: &[u8]) -> Result<Protocol, Error> {
        Self::parse_versioned(record).map(|(protocol, _)| protocol)
    }

    /// Parses a handshake record and returns the protocol with the version
    /// the client named: below 2 a client does not speak stateful reconnect
    /// (no Sequence or Ack), whatever negotiate said (ASP.NET Core's
    /// `HubConnectionContext` turns the feature off for it).
    pub fn parse_versioned(record: &[u8]) -> Result<(Protocol, u32), Error> {
        let req: HandshakeRequest =
            super::json::from_object(record).map_err(|e| Error::Malformed(format!("handshake: {e}")))?;
        Ok((Protocol::from_handshake(&req.protocol, req.version)?, req.version))
    }
}

/// The server's answer: `{}` on success, `{"error": "..."}` otherwise.
#[derive(Debug, Serialize, Default)]
pub struct HandshakeResponse {
    /// Why the handshake failed; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HandshakeResponse {
    /// The record to send, separator included.
    pub fn to_record(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a struct of strings serializes");
        out.push(RECORD_SEPARATOR);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_counts_its_last_value() {
        let p = HandshakeRequest::parse(br#"{"protocol":"messagepack","version":1,"protocol":"json"}"#);
        assert_eq!(p, Ok(Protocol::Json));
    }

    #[test]
    fn accepts_json_version_1() {
        let p = HandshakeRequest::parse(br#"{"protocol":"json","version":1}"#);
        assert_eq!(p, Ok(Protocol::Json));
    }

    #[test]
    fn refuses_an_unknown_protocol_by_name() {
        let err = HandshakeRequest::parse(br#"{"protocol":"xml","version":1}"#).unwrap_err();
        assert_eq!(err, Error::UnknownProtocol { name: "xml".into() });
    }

    #[test]
    fn names_match_in_any_case_and_versions_up_to_2() {
        assert_eq!(HandshakeRequest::parse(br#"{"protocol":"JSON","version":0}"#), Ok(Protocol::Json));
        assert_eq!(HandshakeRequest::parse(br#"{"protocol":"MessagePack","version":2}"#), Ok(Protocol::MessagePack));
        assert_eq!(
            HandshakeRequest::parse(br#"{"protocol":"Json","version":3}"#),
            Err(Error::UnsupportedVersion { name: "Json".into(), version: 3 })
        );
    }

    #[test]
    fn success_and_error_records() {
        assert_eq!(HandshakeResponse::default().to_record(), b"{}\x1e");
        let err = HandshakeResponse { error: Some("no".into()) }.to_record();
        assert_eq!(err, b"{\"error\":\"no\"}\x1e");
    }
}
