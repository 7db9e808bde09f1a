//! Raw in-place encrypt+decrypt of RustCrypto's and ring's AEADs, and the
//! cost of the e2ee.opened marker's candidates, best of 7 rounds each.
use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use hmac::Mac;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

fn best_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
        })
        .fold(f64::MAX, f64::min)
}

fn ring_key(alg: &'static ring::aead::Algorithm, key: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(alg, key).expect("32-byte key"))
}

fn ring_round_trip(key: &LessSafeKey, buf: &mut [u8]) {
    let n = || Nonce::assume_unique_for_key([0; 12]);
    let tag = key
        .seal_in_place_separate_tag(n(), Aad::empty(), black_box(&mut *buf))
        .expect("seal");
    key.open_in_place_separate_tag(n(), Aad::empty(), tag, black_box(buf), 0..)
        .expect("open");
}

fn rustcrypto_round_trip<A: AeadInPlace>(aead: &A, buf: &mut [u8]) {
    let n = Default::default();
    let tag = aead
        .encrypt_in_place_detached(&n, b"", black_box(&mut *buf))
        .expect("seal");
    aead.decrypt_in_place_detached(&n, b"", black_box(buf), &tag)
        .expect("open");
}

fn main() {
    let key = [7u8; 32];
    let rc_aes = aes_gcm::Aes256Gcm::new((&key).into());
    let rc_chacha = chacha20poly1305::ChaCha20Poly1305::new((&key).into());
    let (ring_aes, ring_chacha) = (
        ring_key(&AES_256_GCM, &key),
        ring_key(&CHACHA20_POLY1305, &key),
    );
    println!("raw encrypt+decrypt in place, ns");
    println!(
        "{:>8} {:>15} {:>10} {:>18} {:>12}",
        "size", "RustCrypto AES", "ring AES", "RustCrypto ChaCha", "ring ChaCha"
    );
    for n in [100usize, 1024, 10240, 102400] {
        let mut buf = vec![3u8; n];
        let iters = (20_000_000 / (n + 200)).max(100) as u32;
        let t = [
            best_ns(iters, || rustcrypto_round_trip(&rc_aes, &mut buf)),
            best_ns(iters, || ring_round_trip(&ring_aes, &mut buf)),
            best_ns(iters, || rustcrypto_round_trip(&rc_chacha, &mut buf)),
            best_ns(iters, || ring_round_trip(&ring_chacha, &mut buf)),
        ];
        println!(
            "{n:>8} {:>15.1} {:>10.1} {:>18.1} {:>12.1}",
            t[0], t[1], t[2], t[3]
        );
    }

    println!();
    println!("a MAC over the value (the e2ee.opened marker's candidates), ns");
    println!(
        "{:>8} {:>16} {:>18} {:>13}",
        "size", "HMAC-SHA256", "GCM, value as AAD", "copy+GCM seal"
    );
    let hmac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
    let mut scratch = Vec::new();
    for n in [100usize, 1024, 10240] {
        let value = vec![3u8; n];
        let position = [1u8; 40];
        let t = [
            best_ns(200_000, || {
                let mut m = hmac.clone();
                m.update(black_box(&value));
                black_box(m.finalize());
            }),
            best_ns(200_000, || {
                let mut p = position;
                let n = Nonce::assume_unique_for_key([0; 12]);
                let _ = black_box(
                    ring_aes
                        .seal_in_place_separate_tag(n, Aad::from(black_box(&value)), &mut p)
                        .expect("seal"),
                );
            }),
            best_ns(200_000, || {
                scratch.clear();
                scratch.extend_from_slice(&position);
                scratch.extend_from_slice(black_box(&value));
                let n = Nonce::assume_unique_for_key([0; 12]);
                let _ = black_box(
                    ring_aes
                        .seal_in_place_separate_tag(n, Aad::empty(), &mut scratch)
                        .expect("seal"),
                );
            }),
        ];
        println!("{n:>8} {:>16.1} {:>18.1} {:>13.1}", t[0], t[1], t[2]);
    }
}
