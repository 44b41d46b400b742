//! Why a broker operation failed, and whether trying again later can help.

/// A failed broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection to the broker right now (never connected, or reconnecting).
    #[error("broker unavailable")]
    Unavailable,
    /// The broker refused the message (negative publisher confirm).
    #[error("broker nacked the message")]
    Nacked,
    /// The message matched no queue and came back (mandatory publish).
    #[error("message was unroutable")]
    Unroutable,
    /// No confirm arrived within the deadline; the message may or may not be stored.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// A message on a queue is not an envelope we understand.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The AMQP client reported an error.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
}

impl BrokerError {
    /// Whether the same operation may succeed later (everything but a malformed message).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, BrokerError::Malformed(_))
    }
}
