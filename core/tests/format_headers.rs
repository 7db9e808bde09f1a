//! Sealed application headers (docs/FORMAT.md section 12): round trips of
//! any header list (order, duplicates, null and empty values, the empty
//! list), and every tampering a broker can try: a flipped byte anywhere in
//! the sealed header or the record header, a stripped or added sealed
//! header, a stripped flag, a sealed header moved from another record, and
//! changed, removed, added or reordered clear copies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kafka_e2ee_core::format::{
    check_clear_headers, decode_header_list, encode_header_list, open_in_place, open_record,
    seal_record, AppHeader, Cipher, Compression, DataKey, FormatError, InstanceId, KeyBinding,
    KeyId, RecordHeader, Sealing, FLAG_HEADERS, SEALED_HEADERS_TAG_LEN,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Owned {
    name: String,
    value: Option<Vec<u8>>,
    clear: bool,
}

fn borrow(list: &[Owned]) -> Vec<AppHeader<'_>> {
    list.iter()
        .map(|h| AppHeader {
            name: &h.name,
            value: h.value.as_deref(),
            clear: h.clear,
        })
        .collect()
}

fn header_list() -> impl Strategy<Value = Vec<Owned>> {
    // Few distinct names, so duplicates are common.
    let name = prop_oneof![
        Just(String::new()),
        Just("trace".to_owned()),
        Just("tenant".to_owned()),
        "[a-zé€]{0,12}",
    ];
    let value = proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..40));
    proptest::collection::vec(
        (name, value, any::<bool>()).prop_map(|(name, value, clear)| Owned { name, value, clear }),
        0..8,
    )
}

fn sealing() -> impl Strategy<Value = Sealing> {
    (
        prop::sample::select(Cipher::ALL.to_vec()),
        prop::sample::select(Compression::ALL.to_vec()),
    )
        .prop_map(|(cipher, compression)| Sealing {
            cipher,
            compression,
        })
}

fn id(epoch: u32) -> KeyId {
    KeyId {
        producer: InstanceId(*b"producer"),
        epoch,
    }
}

struct Sealed {
    key: DataKey,
    plaintext: Vec<u8>,
    value: Vec<u8>,
    header: [u8; 34],
    sealed: Vec<u8>,
    encoded: Vec<u8>,
    /// The clear copies, as the producer leaves them on the record.
    visible: Vec<AppHeader<'static>>,
}

fn seal(list: &[Owned], sealing: Sealing, counter: u32, value: &[u8]) -> Sealed {
    let key = DataKey::from_bytes([7; 32]);
    let encoded = encode_header_list(&borrow(list)).unwrap().to_vec();
    let mut sealed_value = value.to_vec();
    let (header, sealed) = seal_record(
        &key,
        id(3),
        counter,
        "orders",
        KeyBinding::Unbound,
        sealing,
        &mut sealed_value,
        Some(&encoded),
    )
    .unwrap();
    assert!(header.has_sealed_headers());
    Sealed {
        key,
        plaintext: value.to_vec(),
        value: sealed_value,
        header: header.encode(),
        sealed: sealed.unwrap(),
        encoded,
        visible: list
            .iter()
            .filter(|h| h.clear)
            .map(|h| AppHeader {
                name: h.name.clone().leak(),
                value: h.value.clone().map(|v| &*v.leak()),
                clear: false,
            })
            .collect(),
    }
}

fn open(
    s: &Sealed,
    header: &[u8],
    sealed: &[&[u8]],
    value: &mut [u8],
) -> Result<Vec<u8>, FormatError> {
    let header = RecordHeader::decode(header)?;
    open_record(
        &s.key,
        &header,
        "orders",
        KeyBinding::Unbound,
        value,
        sealed,
        &s.visible,
    )
    .map(|h| h.map(|h| h.to_vec()).unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn headers_round_trip_exactly(
        list in header_list(),
        sealing in sealing(),
        value in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let s = seal(&list, sealing, 9, &value);
        prop_assert_eq!(s.value.len(), value.len());
        prop_assert_eq!(s.sealed.len(), s.encoded.len() + SEALED_HEADERS_TAG_LEN);
        let mut buf = s.value.clone();
        let plain = open(&s, &s.header, &[&s.sealed], &mut buf).unwrap();
        prop_assert_eq!(&buf, &s.plaintext);
        prop_assert_eq!(&plain, &s.encoded);
        let decoded = decode_header_list(&plain).unwrap();
        prop_assert_eq!(decoded, borrow(&list));
        // The clear copies, as the producer leaves them, check out.
        let visible: Vec<AppHeader<'_>> = borrow(&list).into_iter().filter(|h| h.clear).collect();
        prop_assert_eq!(check_clear_headers(&borrow(&list), &visible), Ok(()));
    }

    #[test]
    fn any_flipped_bit_of_the_sealed_headers_is_rejected(
        list in header_list(),
        sealing in sealing(),
        pos in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let s = seal(&list, sealing, 1, b"value");
        let mut bad = s.sealed.clone();
        let at = pos.index(bad.len());
        bad[at] ^= 1 << bit;
        let mut buf = s.value.clone();
        prop_assert_eq!(open(&s, &s.header, &[&bad], &mut buf), Err(FormatError::Authentication));
        prop_assert_eq!(&buf, &s.value);
        // Truncated or extended: the same.
        for cut in [bad.len() - 1, 0] {
            prop_assert_eq!(
                open(&s, &s.header, &[&s.sealed[..cut]], &mut buf),
                Err(FormatError::Authentication)
            );
        }
        let mut longer = s.sealed.clone();
        longer.push(0);
        prop_assert_eq!(open(&s, &s.header, &[&longer], &mut buf), Err(FormatError::Authentication));
        prop_assert_eq!(&buf, &s.value);
    }

    #[test]
    fn decoding_any_bytes_never_panics_and_accepts_only_canonical_lists(
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        // Also the `header_list` fuzz target's check.
        if let Ok(list) = decode_header_list(&bytes) {
            let again = encode_header_list(&list).unwrap();
            prop_assert_eq!(again.as_slice(), &bytes[..]);
        }
    }

    #[test]
    fn any_flipped_bit_of_the_record_header_is_rejected(
        list in header_list(),
        pos in 0..34usize,
        bit in 0..8u8,
    ) {
        let s = seal(&list, Sealing::default(), 1, b"value");
        let mut bad = s.header;
        bad[pos] ^= 1 << bit;
        let mut buf = s.value.clone();
        prop_assert!(open(&s, &bad, &[&s.sealed], &mut buf).is_err());
        prop_assert_eq!(&buf, &s.value);
    }
}

fn sample() -> Vec<Owned> {
    let h = |name: &str, value: Option<&[u8]>, clear| Owned {
        name: name.to_owned(),
        value: value.map(<[u8]>::to_vec),
        clear,
    };
    vec![
        h("tenant", Some(b"acme"), false),
        h("trace", Some(b"t-1"), true),
        h("tenant", Some(b"other"), false),
        h("null", None, false),
        h("empty", Some(b""), false),
    ]
}

#[test]
fn stripping_adding_or_duplicating_the_sealed_header_is_rejected() {
    let s = seal(&sample(), Sealing::default(), 5, b"payload");
    let mut buf = s.value.clone();
    assert_eq!(
        open(&s, &s.header, &[], &mut buf),
        Err(FormatError::SealedHeadersMissing)
    );
    assert_eq!(
        open(&s, &s.header, &[&s.sealed, &s.sealed], &mut buf),
        Err(FormatError::SealedHeadersDuplicate)
    );
    // The flag stripped too: the value no longer authenticates.
    let mut stripped = s.header;
    stripped[1] &= !FLAG_HEADERS;
    assert_eq!(
        open(&s, &stripped, &[], &mut buf),
        Err(FormatError::Authentication)
    );
    assert_eq!(
        open(&s, &stripped, &[&s.sealed], &mut buf),
        Err(FormatError::SealedHeadersUnexpected)
    );
    // A record sealed without headers, given some.
    let key = DataKey::from_bytes([7; 32]);
    let mut v = b"payload".to_vec();
    let (plain_header, none) = seal_record(
        &key,
        id(3),
        6,
        "orders",
        KeyBinding::Unbound,
        Sealing::default(),
        &mut v,
        None,
    )
    .unwrap();
    assert!(none.is_none() && !plain_header.has_sealed_headers());
    assert_eq!(
        open(&s, &plain_header.encode(), &[&s.sealed], &mut v),
        Err(FormatError::SealedHeadersUnexpected)
    );
    assert_eq!(open(&s, &plain_header.encode(), &[], &mut v), Ok(vec![]));
    assert_eq!(v, b"payload");
    assert_eq!(buf, s.value);
}

#[test]
fn sealed_headers_of_another_record_do_not_open() {
    let a = seal(&sample(), Sealing::default(), 5, b"payload");
    let b = seal(&sample(), Sealing::default(), 6, b"payload");
    let mut buf = a.value.clone();
    assert_eq!(
        open(&a, &a.header, &[&b.sealed], &mut buf),
        Err(FormatError::Authentication)
    );
    // Another topic: the same.
    let header = RecordHeader::decode(&a.header).unwrap();
    assert_eq!(
        open_record(
            &a.key,
            &header,
            "orders2",
            KeyBinding::Unbound,
            &mut buf,
            &[&a.sealed],
            &a.visible
        ),
        Err(FormatError::Authentication)
    );
    assert_eq!(buf, a.value);
}

#[test]
fn the_value_alone_opens_under_the_flag_but_a_previous_reader_refuses_it() {
    // open_in_place (the value only) authenticates the flag like any other;
    // hosts use open_record, which insists on the sealed header.
    let s = seal(&sample(), Sealing::default(), 5, b"payload");
    let header = RecordHeader::decode(&s.header).unwrap();
    let mut buf = s.value.clone();
    open_in_place(&s.key, &header, "orders", KeyBinding::Unbound, &mut buf).unwrap();
    assert_eq!(buf, b"payload");
    // Bit 7 was reserved before this section: readers of the previous
    // version reject the header as reserved_flags (fail closed).
    assert_eq!(s.header[1] & 0x80, 0x80);
}

#[test]
fn reordering_changing_or_removing_clear_copies_is_rejected() {
    let list = vec![
        Owned {
            name: "route".into(),
            value: Some(b"eu".to_vec()),
            clear: true,
        },
        Owned {
            name: "secret".into(),
            value: Some(b"x".to_vec()),
            clear: false,
        },
        Owned {
            name: "route".into(),
            value: None,
            clear: true,
        },
    ];
    let sealed = borrow(&list);
    let v = |name, value| AppHeader {
        name,
        value,
        clear: false,
    };
    assert_eq!(
        check_clear_headers(&sealed, &[v("route", Some(b"eu")), v("route", None)]),
        Ok(())
    );
    // Headers added on the way under other names are not checked.
    assert_eq!(
        check_clear_headers(
            &sealed,
            &[
                v("mm2", Some(b"1")),
                v("route", Some(b"eu")),
                v("route", None)
            ]
        ),
        Ok(())
    );
    for bad in [
        vec![v("route", None), v("route", Some(b"eu"))],
        vec![v("route", Some(b"us")), v("route", None)],
        vec![v("route", Some(b"eu"))],
        vec![],
        vec![v("route", Some(b"eu")), v("route", None), v("route", None)],
    ] {
        assert_eq!(
            check_clear_headers(&sealed, &bad),
            Err(FormatError::ClearHeadersMismatch)
        );
    }
}

#[test]
fn a_changed_clear_copy_is_rejected_before_the_value_is_touched() {
    let mut s = seal(&sample(), Sealing::default(), 5, b"payload");
    assert_eq!(s.visible.len(), 1);
    let mut buf = s.value.clone();
    s.visible[0].value = Some(&b"t-2"[..]);
    assert_eq!(
        open(&s, &s.header, &[&s.sealed], &mut buf),
        Err(FormatError::ClearHeadersMismatch)
    );
    s.visible.clear();
    assert_eq!(
        open(&s, &s.header, &[&s.sealed], &mut buf),
        Err(FormatError::ClearHeadersMismatch)
    );
    assert_eq!(buf, s.value);
}

#[test]
fn the_empty_list_round_trips() {
    let s = seal(&[], Sealing::default(), 1, b"");
    assert_eq!(s.sealed.len(), SEALED_HEADERS_TAG_LEN);
    let mut buf = s.value.clone();
    assert_eq!(open(&s, &s.header, &[&s.sealed], &mut buf), Ok(vec![]));
}

#[test]
fn a_malformed_list_is_never_sealed() {
    let key = DataKey::from_bytes([7; 32]);
    let mut v = b"payload".to_vec();
    let result = seal_record(
        &key,
        id(3),
        6,
        "orders",
        KeyBinding::Unbound,
        Sealing::default(),
        &mut v,
        Some(&[0x09]),
    );
    assert_eq!(result.map(|_| ()), Err(FormatError::HeaderList));
    assert_eq!(v, b"payload");
}
