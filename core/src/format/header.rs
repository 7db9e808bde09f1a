//! The 34-byte record header: strict decode, exact encode.

use super::{BindingKind, Cipher, Compression, FormatError, InstanceId, KeyId};

/// Length of the record header value in bytes.
pub const HEADER_LEN: usize = 34;

/// The only format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Flag bit 0: the record key was bound into the AAD.
pub const FLAG_KEY_BOUND: u8 = 0b0000_0001;
/// Flag bit 1: the bound record key was null. Only valid with [`FLAG_KEY_BOUND`].
pub const FLAG_KEY_NULL: u8 = 0b0000_0010;
/// Flag bit 3: the value is sealed with AES-256-GCM (clear: ChaCha20-Poly1305).
pub const FLAG_AES_256_GCM: u8 = 0b0000_1000;
/// Flag bits 4-5: how the plaintext was compressed before sealing;
/// `0b00` none, `0b01` zstd, `0b10` lz4, `0b11` reserved.
pub const COMPRESSION_MASK: u8 = 0b0011_0000;
/// [`COMPRESSION_MASK`] value: zstd.
pub const COMPRESSION_ZSTD: u8 = 0b0001_0000;
/// [`COMPRESSION_MASK`] value: lz4 (block format).
pub const COMPRESSION_LZ4: u8 = 0b0010_0000;
/// Flag bit 7: the record's application headers travel sealed in the one
/// [`SEALED_HEADERS_NAME`](super::SEALED_HEADERS_NAME) record header
/// (docs/FORMAT.md section 12). A reader built before it rejects such a
/// record as reserved flags: it never hands an application a record
/// without its headers.
pub const FLAG_HEADERS: u8 = 0b1000_0000;
/// Flag bit 6: the record key on the wire is a token of the real key,
/// which travels sealed in the one
/// [`SEALED_KEY_NAME`](super::SEALED_KEY_NAME) record header
/// (docs/FORMAT.md section 13). A reader built before it rejects such a
/// record as reserved flags: it never hands an application the token as
/// the key.
pub const FLAG_TOKEN_KEY: u8 = 0b0100_0000;
/// Flag bit 2: reserved, must be zero.
pub const FLAG_RESERVED: u8 = !(FLAG_KEY_BOUND
    | FLAG_KEY_NULL
    | FLAG_AES_256_GCM
    | COMPRESSION_MASK
    | FLAG_TOKEN_KEY
    | FLAG_HEADERS);

/// Bytes of the header that the AAD covers: everything but the tag.
pub(crate) const AUTHENTICATED_LEN: usize = 18;
const TAG_LEN: usize = HEADER_LEN - AUTHENTICATED_LEN;

/// The decoded `e2ee` record header. See docs/FORMAT.md for the byte layout.
///
/// Fields are public so hosts and tools can inspect them; [`open_in_place`]
/// re-validates a header it did not decode itself.
///
/// [`open_in_place`]: super::open_in_place
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RecordHeader {
    pub version: u8,
    pub flags: u8,
    pub key_id: KeyId,
    pub counter: u32,
    /// The Poly1305 tag. Not secret: it is public on the broker.
    pub tag: [u8; 16],
}

impl RecordHeader {
    /// The header value as it goes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let authenticated = self.encode_authenticated();
        let (head, tail) = out.split_at_mut(AUTHENTICATED_LEN);
        head.copy_from_slice(&authenticated);
        tail.copy_from_slice(&self.tag);
        out
    }

    /// Bytes 0..18 of the encoded header: version, flags, key id, counter.
    pub(crate) fn encode_authenticated(&self) -> [u8; AUTHENTICATED_LEN] {
        let [p0, p1, p2, p3, p4, p5, p6, p7] = self.key_id.producer.0;
        let [e0, e1, e2, e3] = self.key_id.epoch.to_be_bytes();
        let [c0, c1, c2, c3] = self.counter.to_be_bytes();
        [
            self.version,
            self.flags,
            p0,
            p1,
            p2,
            p3,
            p4,
            p5,
            p6,
            p7,
            e0,
            e1,
            e2,
            e3,
            c0,
            c1,
            c2,
            c3,
        ]
    }

    /// Decodes a header value strictly: exactly [`HEADER_LEN`] bytes, version
    /// [`VERSION`], reserved flags zero, KEY_NULL only with KEY_BOUND. Every
    /// header this accepts re-encodes to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
        let wrong_length = || FormatError::HeaderLength {
            actual: bytes.len(),
        };
        let (authenticated, tag) = bytes
            .split_first_chunk::<AUTHENTICATED_LEN>()
            .ok_or_else(wrong_length)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| wrong_length())?;
        let [version, flags, p0, p1, p2, p3, p4, p5, p6, p7, e0, e1, e2, e3, c0, c1, c2, c3] =
            *authenticated;
        let header = RecordHeader {
            version,
            flags,
            key_id: KeyId {
                producer: InstanceId([p0, p1, p2, p3, p4, p5, p6, p7]),
                epoch: u32::from_be_bytes([e0, e1, e2, e3]),
            },
            counter: u32::from_be_bytes([c0, c1, c2, c3]),
            tag,
        };
        header.validate()?;
        Ok(header)
    }

    /// Checks the fields [`decode`](Self::decode) checks, for headers built by hand.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.version != VERSION {
            return Err(FormatError::UnsupportedVersion(self.version));
        }
        // The unassigned compression value is a reserved code point too.
        if self.flags & FLAG_RESERVED != 0 || self.flags & COMPRESSION_MASK == COMPRESSION_MASK {
            return Err(FormatError::ReservedFlags(self.flags));
        }
        if self.flags & FLAG_KEY_NULL != 0 && self.flags & FLAG_KEY_BOUND == 0 {
            return Err(FormatError::KeyNullWithoutKeyBound);
        }
        Ok(())
    }

    /// The cipher the value is sealed with, according to the flags.
    pub fn cipher(&self) -> Cipher {
        if self.flags & FLAG_AES_256_GCM != 0 {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        }
    }

    /// How the plaintext was compressed, according to the flags. Assumes a
    /// validated header (the reserved value reads as `None`).
    pub fn compression(&self) -> Compression {
        match self.flags & COMPRESSION_MASK {
            COMPRESSION_ZSTD => Compression::Zstd,
            COMPRESSION_LZ4 => Compression::Lz4,
            _ => Compression::None,
        }
    }

    /// Whether the record's application headers are sealed in a
    /// [`SEALED_HEADERS_NAME`](super::SEALED_HEADERS_NAME) header.
    pub fn has_sealed_headers(&self) -> bool {
        self.flags & FLAG_HEADERS != 0
    }

    /// Whether the record key on the wire is a token and the real key is
    /// sealed in a [`SEALED_KEY_NAME`](super::SEALED_KEY_NAME) header.
    pub fn has_token_key(&self) -> bool {
        self.flags & FLAG_TOKEN_KEY != 0
    }

    /// How the record key was bound, according to the flags. Assumes a
    /// validated header.
    pub fn binding_kind(&self) -> BindingKind {
        if self.flags & FLAG_KEY_BOUND == 0 {
            BindingKind::Unbound
        } else if self.flags & FLAG_KEY_NULL != 0 {
            BindingKind::Null
        } else {
            BindingKind::Bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordHeader {
        RecordHeader {
            version: VERSION,
            flags: FLAG_KEY_BOUND,
            key_id: KeyId {
                producer: InstanceId([1, 2, 3, 4, 5, 6, 7, 8]),
                epoch: 0x0a0b_0c0d,
            },
            counter: 0x1122_3344,
            tag: [0xee; 16],
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = sample().encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1], 1);
        assert_eq!(&bytes[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[10..14], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&bytes[14..18], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&bytes[18..34], &[0xee; 16]);
        assert_eq!(RecordHeader::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn cipher_and_compression_fields() {
        let mut h = sample();
        assert_eq!(
            (h.cipher(), h.compression()),
            (Cipher::ChaCha20Poly1305, Compression::None)
        );
        h.flags |= FLAG_AES_256_GCM | COMPRESSION_LZ4;
        let decoded = RecordHeader::decode(&h.encode()).unwrap();
        assert_eq!(
            (decoded.cipher(), decoded.compression()),
            (Cipher::Aes256Gcm, Compression::Lz4)
        );
        h.flags = FLAG_KEY_BOUND | COMPRESSION_MASK;
        assert_eq!(
            RecordHeader::decode(&h.encode()),
            Err(FormatError::ReservedFlags(h.flags))
        );
    }

    #[test]
    fn key_null_requires_key_bound() {
        let mut bytes = sample().encode();
        bytes[1] = FLAG_KEY_NULL;
        assert_eq!(
            RecordHeader::decode(&bytes),
            Err(FormatError::KeyNullWithoutKeyBound)
        );
        bytes[1] = FLAG_KEY_NULL | FLAG_KEY_BOUND;
        assert!(RecordHeader::decode(&bytes).is_ok());
    }
}
