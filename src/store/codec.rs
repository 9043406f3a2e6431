//! How a session record becomes bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// The encoding of stored sessions.
///
/// JSON is the default, so stored sessions stay readable in `psql`, `sqlite3` or
/// `redis-cli`. [`Codec::MsgPack`] (feature `msgpack`) is more compact.
///
/// Decoding recognises both formats by their first byte, so a bot can switch codec at
/// any time: records written before the switch are still read, and each is rewritten in
/// the new format the next time its session changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// `serde_json` (the default).
    #[default]
    Json,
    /// MessagePack through `rmp-serde`, with field names kept (self-describing).
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    MsgPack,
}

impl Codec {
    /// Encodes a value.
    ///
    /// # Errors
    /// When the value cannot be serialized by this format.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, BoxError> {
        self.encode_sized(value, 128)
    }

    /// Like [`encode`](Self::encode), into a buffer of `size_hint` bytes to start with
    /// (the size of the previous encoding avoids growing the buffer).
    ///
    /// # Errors
    /// When the value cannot be serialized by this format.
    pub fn encode_sized<T: Serialize + ?Sized>(
        self,
        value: &T,
        size_hint: usize,
    ) -> Result<Vec<u8>, BoxError> {
        let mut buf = Vec::with_capacity(size_hint);
        match self {
            Self::Json => serde_json::to_writer(&mut buf, value)?,
            #[cfg(feature = "msgpack")]
            Self::MsgPack => rmp_serde::encode::write_named(&mut buf, value)?,
        }
        Ok(buf)
    }

    /// Decodes bytes written by any codec of this enum.
    ///
    /// # Errors
    /// When the bytes are not a valid encoding of `T`.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError> {
        match bytes.first() {
            #[cfg(feature = "msgpack")]
            Some(b) if !b.is_ascii_whitespace() && *b != b'{' && *b != b'[' => {
                Ok(rmp_serde::from_slice(bytes)?)
            }
            _ => Ok(serde_json::from_slice(bytes)?),
        }
    }
}
