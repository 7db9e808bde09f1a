//! Sealed application headers (docs/FORMAT.md section 12): the encoding of
//! a record's header list, and sealing and opening it in the one extra
//! record header [`SEALED_HEADERS_NAME`].
//!
//! The list is sealed with the record's cipher under a key of its own
//! derived from the data key ([`DataKey::headers_key`]) and the value's
//! nonce, so no (key, nonce) pair ever seals two messages; the value's AAD
//! carries the FLAG_HEADERS bit, so the sealed header cannot be stripped
//! without the value failing to open.

use core::fmt;

use ring::aead::{Aad, Nonce, Tag};
use zeroize::Zeroizing;

use super::header::AUTHENTICATED_LEN;
use super::{DataKey, FormatError, RecordHeader};

/// Name of the record header that carries a record's sealed application
/// headers.
pub const SEALED_HEADERS_NAME: &str = "e2ee.h";

/// Length of the tag at the end of a sealed-headers value.
pub const SEALED_HEADERS_TAG_LEN: usize = 16;

/// First bytes of the sealed headers' AAD: distinct from the value's
/// (`kafka-e2ee/v1`), though the keys differ anyway.
const HEADERS_AAD_LABEL: &[u8] = b"kafka-e2ee/v1/headers";

/// Entry kind bit 0: the header's value is null (no value field follows).
const KIND_NULL: u8 = 0x01;
/// Entry kind bit 1: the header also travels in the clear
/// (`e2ee.headers.clear`); the reader checks the clear copy.
const KIND_CLEAR: u8 = 0x02;

/// One application header as the encoding carries it. `Debug` shows only
/// lengths: names and values may be secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AppHeader<'a> {
    /// The header's name (Kafka header keys are strings).
    pub name: &'a str,
    /// The value; `None` is a null value, distinct from an empty one.
    pub value: Option<&'a [u8]>,
    /// The header also stays readable on the record (`e2ee.headers.clear`).
    pub clear: bool,
}

impl fmt::Debug for AppHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppHeader")
            .field("name_len", &self.name.len())
            .field("value_len", &self.value.map(<[u8]>::len))
            .field("clear", &self.clear)
            .finish()
    }
}

/// Encodes a header list (docs/FORMAT.md section 12): for each header in
/// order, `kind (u8) || name length (u32 BE) || name || [value length
/// (u32 BE) || value]`, the value part absent for a null value. The result
/// holds plaintext and is wiped when dropped.
pub fn encode_header_list(headers: &[AppHeader<'_>]) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    let mut len = 0usize;
    for h in headers {
        len = len
            .saturating_add(1 + 4 + h.name.len())
            .saturating_add(h.value.map_or(0, |v| 4 + v.len()));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for h in headers {
        let name_len = u32::try_from(h.name.len()).map_err(|_| FormatError::HeaderList)?;
        let mut kind = 0;
        if h.value.is_none() {
            kind |= KIND_NULL;
        }
        if h.clear {
            kind |= KIND_CLEAR;
        }
        out.push(kind);
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(h.name.as_bytes());
        if let Some(value) = h.value {
            let value_len = u32::try_from(value.len()).map_err(|_| FormatError::HeaderList)?;
            out.extend_from_slice(&value_len.to_be_bytes());
            out.extend_from_slice(value);
        }
    }
    Ok(out)
}

/// Decodes a header list strictly: known kind bits only, lengths within the
/// input, names UTF-8, nothing left over. Every list it accepts re-encodes
/// to the same bytes. [`FormatError::HeaderList`] otherwise.
pub fn decode_header_list(mut bytes: &[u8]) -> Result<Vec<AppHeader<'_>>, FormatError> {
    fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Result<&'b [u8], FormatError> {
        let (head, tail) = bytes.split_at_checked(n).ok_or(FormatError::HeaderList)?;
        *bytes = tail;
        Ok(head)
    }
    fn take_len(bytes: &mut &[u8]) -> Result<usize, FormatError> {
        let (len, tail) = bytes
            .split_first_chunk::<4>()
            .ok_or(FormatError::HeaderList)?;
        *bytes = tail;
        usize::try_from(u32::from_be_bytes(*len)).map_err(|_| FormatError::HeaderList)
    }
    let mut out = Vec::new();
    while let Some((&kind, tail)) = bytes.split_first() {
        bytes = tail;
        if kind & !(KIND_NULL | KIND_CLEAR) != 0 {
            return Err(FormatError::HeaderList);
        }
        let name_len = take_len(&mut bytes)?;
        let name = std::str::from_utf8(take(&mut bytes, name_len)?)
            .map_err(|_| FormatError::HeaderList)?;
        let value = if kind & KIND_NULL != 0 {
            None
        } else {
            let value_len = take_len(&mut bytes)?;
            Some(take(&mut bytes, value_len)?)
        };
        out.push(AppHeader {
            name,
            value,
            clear: kind & KIND_CLEAR != 0,
        });
    }
    Ok(out)
}

/// Which of a record's sealed-headers values (every header named
/// [`SEALED_HEADERS_NAME`], in order) is to be opened: exactly one if the
/// record header has FLAG_HEADERS, none otherwise.
pub fn select_sealed_headers<'s>(
    header: &RecordHeader,
    sealed: &[&'s [u8]],
) -> Result<Option<&'s [u8]>, FormatError> {
    match (header.has_sealed_headers(), sealed) {
        (false, []) => Ok(None),
        (false, _) => Err(FormatError::SealedHeadersUnexpected),
        (true, []) => Err(FormatError::SealedHeadersMissing),
        (true, [one]) => Ok(Some(one)),
        (true, _) => Err(FormatError::SealedHeadersDuplicate),
    }
}

/// Seals an encoded header list (see [`encode_header_list`]) for the record
/// whose header is `header` (which must have FLAG_HEADERS; its tag is not
/// used): returns `ciphertext || tag`, the value of the
/// [`SEALED_HEADERS_NAME`] header. `plain` must decode.
pub(super) fn seal_headers(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    plain: &[u8],
) -> Result<Vec<u8>, FormatError> {
    if !header.has_sealed_headers() {
        return Err(FormatError::SealedHeadersUnexpected);
    }
    decode_header_list(plain)?;
    let aad = headers_aad(topic, &header.encode_authenticated())?;
    // Only a list too long for the cipher fails.
    seal_beside(key.headers_aead(header.cipher()), header, &aad, plain)
        .ok_or(FormatError::HeaderList)
}

/// Seals a small message that travels beside a record's value (`e2ee.h`,
/// `e2ee.k`) under its own key and the value's nonce: `ciphertext || tag`.
/// None only if the message is too long for the cipher; the plaintext copy
/// is wiped then.
pub(super) fn seal_beside(
    aead: &ring::aead::LessSafeKey,
    header: &RecordHeader,
    aad: &[u8],
    plain: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(plain.len() + SEALED_HEADERS_TAG_LEN);
    out.extend_from_slice(plain);
    let nonce = super::aead::nonce(header.key_id.epoch, header.counter);
    match aead.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out,
    ) {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Some(out)
        }
        Err(_) => {
            zeroize::Zeroize::zeroize(&mut out);
            None
        }
    }
}

/// Verifies and decrypts what [`seal_beside`] made; `Authentication` if it
/// is too short or does not verify. Nothing is decrypted before the tag
/// verifies.
pub(super) fn open_beside(
    aead: &ring::aead::LessSafeKey,
    header: &RecordHeader,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    let ct_len = sealed
        .len()
        .checked_sub(SEALED_HEADERS_TAG_LEN)
        .ok_or(FormatError::Authentication)?;
    let (ct, tag) = sealed.split_at(ct_len);
    let tag: [u8; SEALED_HEADERS_TAG_LEN] =
        tag.try_into().map_err(|_| FormatError::Authentication)?;
    let mut plain = Zeroizing::new(ct.to_vec());
    let nonce = super::aead::nonce(header.key_id.epoch, header.counter);
    aead.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        Tag::from(tag),
        &mut plain,
        0..,
    )
    .map_err(|_| FormatError::Authentication)?;
    Ok(plain)
}

/// Verifies and decrypts a sealed-headers value of the record whose header
/// is `header`: the encoded list, checked to decode. `Authentication` if it
/// does not verify (too short, tampered, another record's), `HeaderList`
/// if it verifies but does not decode.
pub fn open_headers(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    header.validate()?;
    if !header.has_sealed_headers() {
        return Err(FormatError::SealedHeadersUnexpected);
    }
    let aad = headers_aad(topic, &header.encode_authenticated())?;
    let plain = open_beside(key.headers_aead(header.cipher()), header, &aad, sealed)?;
    decode_header_list(&plain)?;
    Ok(plain)
}

/// Checks the headers a record carries in the clear against the sealed
/// list: the record's headers named like any sealed entry marked clear
/// (`visible`: the record's headers but its `e2ee` and
/// [`SEALED_HEADERS_NAME`] ones, in order) must be exactly those entries,
/// in order, values and nulls alike. A header added on the way under
/// another name is not checked (the reader drops it).
pub fn check_clear_headers(
    sealed: &[AppHeader<'_>],
    visible: &[AppHeader<'_>],
) -> Result<(), FormatError> {
    let is_clear_name = |name: &str| sealed.iter().any(|h| h.clear && h.name == name);
    let mut expected = sealed.iter().filter(|h| h.clear);
    let mut seen = visible.iter().filter(|h| is_clear_name(h.name));
    loop {
        match (expected.next(), seen.next()) {
            (None, None) => return Ok(()),
            (Some(e), Some(s)) if e.name == s.name && e.value == s.value => {}
            _ => return Err(FormatError::ClearHeadersMismatch),
        }
    }
}

/// label || u16 BE topic length || topic || record header bytes 0..18.
fn headers_aad(
    topic: &str,
    header_authenticated: &[u8; AUTHENTICATED_LEN],
) -> Result<Vec<u8>, FormatError> {
    let topic = topic.as_bytes();
    let topic_len = u16::try_from(topic.len())
        .map_err(|_| FormatError::TopicTooLong { len: topic.len() })?
        .to_be_bytes();
    Ok([HEADERS_AAD_LABEL, &topic_len, topic, header_authenticated].concat())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: Option<&'a [u8]>, clear: bool) -> AppHeader<'a> {
        AppHeader { name, value, clear }
    }

    #[test]
    fn list_layout_and_round_trip() {
        let list = [
            h("a", Some(b"xy"), false),
            h("a", None, true),
            h("", Some(b""), false),
        ];
        let bytes = encode_header_list(&list).unwrap();
        let expected: Vec<u8> = [
            &[0x00, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'x', b'y'][..],
            &[0x03, 0, 0, 0, 1, b'a'],
            &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(*bytes, expected);
        assert_eq!(decode_header_list(&bytes).unwrap(), list);
        assert_eq!(decode_header_list(&[]).unwrap(), []);
    }

    #[test]
    fn decoding_is_strict() {
        let good = encode_header_list(&[h("n", Some(b"v"), false)]).unwrap();
        for cut in 0..good.len() {
            let r = decode_header_list(&good[..cut]);
            assert!(cut == 0 || r == Err(FormatError::HeaderList), "{cut}");
        }
        let mut extra = good.to_vec();
        extra.push(0);
        assert_eq!(decode_header_list(&extra), Err(FormatError::HeaderList));
        for kind in 4..=255u8 {
            let mut bad = good.to_vec();
            bad[0] = kind;
            assert_eq!(decode_header_list(&bad), Err(FormatError::HeaderList));
        }
        let bad_name = [0u8, 0, 0, 0, 1, 0xff, 0, 0, 0, 0];
        assert_eq!(decode_header_list(&bad_name), Err(FormatError::HeaderList));
    }

    #[test]
    fn debug_shows_no_bytes() {
        let shown = format!("{:?}", h("secret-name", Some(b"secret-value"), false));
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn clear_headers_must_match_exactly() {
        let sealed = [
            h("trace", Some(b"1"), true),
            h("s", Some(b"x"), false),
            h("trace", None, true),
        ];
        let ok = [
            h("trace", Some(b"1"), false),
            h("other", None, false),
            h("trace", None, false),
        ];
        assert_eq!(check_clear_headers(&sealed, &ok), Ok(()));
        let reordered = [h("trace", None, false), h("trace", Some(b"1"), false)];
        let changed = [h("trace", Some(b"2"), false), h("trace", None, false)];
        let removed = [h("trace", Some(b"1"), false)];
        let added = [
            h("trace", Some(b"1"), false),
            h("trace", None, false),
            h("trace", None, false),
        ];
        for bad in [&reordered[..], &changed, &removed, &added] {
            assert_eq!(
                check_clear_headers(&sealed, bad),
                Err(FormatError::ClearHeadersMismatch)
            );
        }
        // A sealed (not clear) name on the record is someone else's header.
        assert_eq!(
            check_clear_headers(&sealed, &[ok[0], h("s", None, false), ok[2]]),
            Ok(())
        );
    }
}
