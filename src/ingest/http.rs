//! `POST /internal/events`: one envelope as JSON, checked, then published.

use crate::envelope::{Envelope, EnvelopeError, Schemas};

use super::{PublishError, Published, Publisher};

/// Why a POSTed event was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpIngestError {
    /// Not JSON, or not a valid envelope: the publisher's fault (400).
    #[error("{0}")]
    Invalid(#[from] EnvelopeError),
    /// Publishing failed.
    #[error("{0}")]
    Publish(#[from] PublishError),
}

/// Decodes, validates and publishes one POSTed envelope; says whether it
/// is on the bus or waiting in the spool for Redis.
pub(crate) async fn accept(
    body: &[u8],
    schemas: &Schemas,
    publisher: &Publisher,
) -> Result<Published, HttpIngestError> {
    let envelope = Envelope::from_json(body, schemas)?;
    Ok(publisher.publish_or_queue(envelope).await?)
}
