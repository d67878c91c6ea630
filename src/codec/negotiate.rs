//! Negotiate response bodies (TransportProtocols.md, versions 0 and 1).

use serde::Serialize;

/// A transport the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TransportKind {
    /// RFC 6455 WebSockets.
    WebSockets,
    /// `text/event-stream` down, POST up.
    ServerSentEvents,
    /// GET polls down, POST up.
    LongPolling,
}

/// The frame formats a transport can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TransferFormat {
    /// UTF-8 text (the JSON protocol).
    Text,
    /// Binary (the MessagePack protocol).
    Binary,
}

/// One entry of `availableTransports`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    /// The transport's name.
    pub transport: TransportKind,
    /// What it carries.
    pub transfer_formats: Vec<TransferFormat>,
}

/// The body of a successful `POST {hub}/negotiate`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// The negotiate version the server answers with (0 or 1).
    pub negotiate_version: u32,
    /// The public id of the connection (visible to other clients in ASP.NET).
    pub connection_id: String,
    /// The secret the client presents on connect; only with version 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_token: Option<String>,
    /// Present and true when the client asked for stateful reconnect and the server allows it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub use_stateful_reconnect: bool,
    /// The transports this server accepts.
    pub available_transports: Vec<AvailableTransport>,
}

impl NegotiateResponse {
    /// Builds the body for the version the client asked for: version 1 gives a
    /// separate token, version 0 uses the connection id as the token.
    pub fn new(
        requested_version: u32,
        connection_id: String,
        connection_token: String,
        available_transports: Vec<AvailableTransport>,
    ) -> Self {
        let version = requested_version.min(1);
        NegotiateResponse {
            negotiate_version: version,
            connection_id,
            connection_token: (version >= 1).then_some(connection_token),
            use_stateful_reconnect: false,
            available_transports,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of strings serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> Vec<AvailableTransport> {
        vec![AvailableTransport {
            transport: TransportKind::WebSockets,
            transfer_formats: vec![TransferFormat::Text, TransferFormat::Binary],
        }]
    }

    #[test]
    fn version_1_carries_a_token() {
        let body = NegotiateResponse::new(1, "id".into(), "tok".into(), ws()).to_json();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["negotiateVersion"], 1);
        assert_eq!(v["connectionToken"], "tok");
        assert_eq!(v["availableTransports"][0]["transport"], "WebSockets");
        assert_eq!(v["availableTransports"][0]["transferFormats"][1], "Binary");
        assert!(v.get("useStatefulReconnect").is_none());
    }

    #[test]
    fn version_0_has_no_token() {
        let body = NegotiateResponse::new(0, "id".into(), "tok".into(), ws()).to_json();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["negotiateVersion"], 0);
        assert!(v.get("connectionToken").is_none());
    }
}
