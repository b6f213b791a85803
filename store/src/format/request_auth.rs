//! Signed requests to a repository server (`cairn serve --repo`,
//! FORMAT.md 18): the canonical form of one HTTP request, its ed25519
//! signature by the client's cairn signing key, and the server's checks
//! (trusted signer, valid signature, fresh timestamp, unused nonce).
//!
//! Used by both sides: `backend::http` signs, the server verifies. The
//! signature covers a domain prefix, the method, the path and query as
//! sent, the body's BLAKE3, the time, a random nonce and the signer, so a
//! signature can be moved to no other request, no other body and no other
//! key, and the same request cannot be sent twice ([`ReplayGuard`]).
//!
//! Must never decide which keys are trusted (the caller passes them), never
//! record a nonce before its signature checked out (or anyone could fill
//! the cache), and never sign or open repository objects (that is `seal`).

use crate::format::keys::PublicKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::collections::HashMap;
use std::sync::Mutex;
use thiserror::Error;

/// Starts every signed request; no envelope's signed message starts so
/// (FORMAT.md 11.1), so neither can stand for the other.
pub const DOMAIN: &[u8] = b"cairn request v1\0";
/// The signer's public key, 64 lowercase hex digits.
pub const HEADER_KEY: &str = "cairn-key";
/// Seconds since the Unix epoch, in decimal.
pub const HEADER_TIME: &str = "cairn-time";
/// 16 random bytes, 32 lowercase hex digits, new for every request.
pub const HEADER_NONCE: &str = "cairn-nonce";
/// The body's BLAKE3, 64 lowercase hex digits (of no bytes for a request
/// without a body). Signed, so the server can check the signature before
/// it reads the body, then the body against this.
pub const HEADER_BODY_HASH: &str = "cairn-body-blake3";
/// The ed25519 signature of [`canonical_request`], 128 hex digits.
pub const HEADER_SIGNATURE: &str = "cairn-signature";
/// How far a request's time may lie from the server's clock, either way.
pub const TIME_WINDOW_SECONDS: u64 = 300;
/// Nonces the server remembers at most. Only requests whose signature
/// checked out are recorded, so only a trusted client can fill it; when it
/// is full of unexpired nonces, requests are refused (busy) rather than
/// remembered badly.
pub const MAX_REMEMBERED_NONCES: usize = 1 << 20;

/// The parts of one request a signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestParts<'a> {
    /// Upper case: `GET`, `PUT`, `DELETE`.
    pub method: &'a str,
    /// The path as sent, starting with `/`.
    pub path: &'a str,
    /// The query as sent, without `?`; empty if none.
    pub query: &'a str,
    /// BLAKE3 of the body, 32 bytes.
    pub body_hash: [u8; 32],
}

/// The authentication headers of one request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSignature {
    pub signer: PublicKey,
    pub time: u64,
    pub nonce: [u8; 16],
    pub signature: [u8; 64],
}

/// Why a request was not accepted. Each names what was wrong and nothing
/// secret; the server sends it back as the reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    #[error("the request is not signed (header {0} is missing)")]
    MissingHeader(&'static str),
    #[error("header {header} is malformed: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("key {} is not trusted by this server", .0.to_hex())]
    Untrusted(PublicKey),
    #[error("the signature does not match the request")]
    BadSignature,
    #[error(
        "the request's time {time} lies {skew} s from the server's clock (at most {TIME_WINDOW_SECONDS} s allowed)"
    )]
    Stale { time: u64, skew: u64 },
    #[error("the request was already received once (a replay)")]
    Replayed,
    #[error("the server remembers too many recent requests; try again shortly")]
    Busy,
    #[error("the body does not match the signed {HEADER_BODY_HASH}")]
    BodyMismatch,
}

/// The exact bytes signed (FORMAT.md 18.2): the domain, then seven lines
/// separated by `\n` (method, path, query, body BLAKE3 hex, time, nonce
/// hex, signer hex), with no newline after the last.
pub fn canonical_request(
    parts: &RequestParts<'_>,
    signer: &PublicKey,
    time: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    let lines = [
        parts.method.to_string(),
        parts.path.to_string(),
        parts.query.to_string(),
        hex::encode(parts.body_hash),
        time.to_string(),
        hex::encode(nonce),
        signer.to_hex(),
    ];
    message.extend_from_slice(lines.join("\n").as_bytes());
    message
}

/// Signs `parts` at `time` with a fresh `nonce`; returns the headers to
/// send, as (name, value) pairs.
pub fn sign_request(
    key: &SigningKey,
    parts: &RequestParts<'_>,
    time: u64,
    nonce: [u8; 16],
) -> Vec<(&'static str, String)> {
    let signer = PublicKey(key.verifying_key().to_bytes());
    let signature = key.sign(&canonical_request(parts, &signer, time, &nonce));
    vec![
        (HEADER_KEY, signer.to_hex()),
        (HEADER_TIME, time.to_string()),
        (HEADER_NONCE, hex::encode(nonce)),
        (HEADER_BODY_HASH, hex::encode(parts.body_hash)),
        (HEADER_SIGNATURE, hex::encode(signature.to_bytes())),
    ]
}

fn hex_exact<const N: usize>(
    text: &str,
    header: &'static str,
) -> std::result::Result<[u8; N], AuthFailure> {
    let malformed = AuthFailure::Malformed {
        header,
        reason: "not the expected number of lowercase hex digits",
    };
    if text.len() != N * 2 || text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return Err(malformed);
    }
    let mut bytes = [0; N];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| malformed)?;
    Ok(bytes)
}

/// Parses the authentication headers; `header` looks one up by its
/// lowercase name. The body hash header is returned beside them.
pub fn parse_headers<'a>(
    header: impl Fn(&'static str) -> Option<&'a str>,
) -> std::result::Result<(RequestSignature, [u8; 32]), AuthFailure> {
    let get = |name: &'static str| header(name).ok_or(AuthFailure::MissingHeader(name));
    let signer = PublicKey(hex_exact::<32>(get(HEADER_KEY)?, HEADER_KEY)?);
    let time_text = get(HEADER_TIME)?;
    let time = if time_text.is_empty()
        || time_text.len() > 20
        || !time_text.bytes().all(|byte| byte.is_ascii_digit())
    {
        None
    } else {
        time_text.parse::<u64>().ok()
    }
    .ok_or(AuthFailure::Malformed {
        header: HEADER_TIME,
        reason: "not a decimal number of seconds",
    })?;
    let nonce = hex_exact::<16>(get(HEADER_NONCE)?, HEADER_NONCE)?;
    let body_hash = hex_exact::<32>(get(HEADER_BODY_HASH)?, HEADER_BODY_HASH)?;
    let signature = hex_exact::<64>(get(HEADER_SIGNATURE)?, HEADER_SIGNATURE)?;
    Ok((
        RequestSignature {
            signer,
            time,
            nonce,
            signature,
        },
        body_hash,
    ))
}

/// A signer's public key and a nonce it used.
type SignerNonce = ([u8; 32], [u8; 16]);

/// Remembers the nonces of accepted requests for as long as their time is
/// inside the window, so that each is accepted once.
pub struct ReplayGuard {
    /// (signer, nonce) → the request's time.
    seen: Mutex<HashMap<SignerNonce, u64>>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::with_capacity(MAX_REMEMBERED_NONCES)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Checks one request in this order: the signer is trusted, the
    /// signature matches `parts`, the time is within the window of `now`,
    /// and the nonce is new (then it is remembered). Returns the signer.
    pub fn verify(
        &self,
        parts: &RequestParts<'_>,
        signature: &RequestSignature,
        trusted: &[PublicKey],
        now: u64,
    ) -> std::result::Result<PublicKey, AuthFailure> {
        if !trusted.contains(&signature.signer) {
            return Err(AuthFailure::Untrusted(signature.signer));
        }
        let key =
            VerifyingKey::from_bytes(&signature.signer.0).map_err(|_| AuthFailure::BadSignature)?;
        let message = canonical_request(parts, &signature.signer, signature.time, &signature.nonce);
        key.verify_strict(&message, &Signature::from_bytes(&signature.signature))
            .map_err(|_| AuthFailure::BadSignature)?;
        let skew = now.abs_diff(signature.time);
        if skew > TIME_WINDOW_SECONDS {
            return Err(AuthFailure::Stale {
                time: signature.time,
                skew,
            });
        }
        // A poisoned lock only means another request panicked while it
        // held it; the map itself is always whole.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = (signature.signer.0, signature.nonce);
        if seen.contains_key(&entry) {
            return Err(AuthFailure::Replayed);
        }
        if seen.len() >= self.capacity {
            // Forget only what the window already refuses by its time.
            seen.retain(|_, time| now.abs_diff(*time) <= TIME_WINDOW_SECONDS);
            if seen.len() >= self.capacity {
                return Err(AuthFailure::Busy);
            }
        }
        seen.insert(entry, signature.time);
        Ok(signature.signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn parts(body: &[u8]) -> RequestParts<'static> {
        RequestParts {
            method: "PUT",
            path: "/main/pack/ab",
            query: "",
            body_hash: *blake3::hash(body).as_bytes(),
        }
    }

    fn signed(key: &SigningKey, parts: &RequestParts<'_>, time: u64) -> RequestSignature {
        let headers = sign_request(key, parts, time, [7; 16]);
        let (signature, body_hash) = parse_headers(|name| {
            headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| value.as_str())
        })
        .expect("headers this module made");
        assert_eq!(body_hash, parts.body_hash);
        signature
    }

    #[test]
    fn a_signed_request_is_accepted_once() {
        let guard = ReplayGuard::default();
        let client = key(1);
        let trusted = [PublicKey(client.verifying_key().to_bytes())];
        let signature = signed(&client, &parts(b"x"), 1_000);
        assert_eq!(
            guard.verify(&parts(b"x"), &signature, &trusted, 1_100),
            Ok(trusted[0])
        );
        assert_eq!(
            guard.verify(&parts(b"x"), &signature, &trusted, 1_100),
            Err(AuthFailure::Replayed)
        );
    }

    #[test]
    fn every_part_is_covered() {
        let client = key(1);
        let trusted = [PublicKey(client.verifying_key().to_bytes())];
        let signature = signed(&client, &parts(b"x"), 1_000);
        let altered = [
            RequestParts {
                method: "DELETE",
                ..parts(b"x")
            },
            RequestParts {
                path: "/main/pack/ac",
                ..parts(b"x")
            },
            RequestParts {
                query: "offset=1",
                ..parts(b"x")
            },
            parts(b"y"),
        ];
        for other in altered {
            let guard = ReplayGuard::default();
            assert_eq!(
                guard.verify(&other, &signature, &trusted, 1_000),
                Err(AuthFailure::BadSignature),
                "{other:?}"
            );
        }
        let guard = ReplayGuard::default();
        let mut later = signature.clone();
        later.time += 1;
        assert_eq!(
            guard.verify(&parts(b"x"), &later, &trusted, 1_000),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn untrusted_stale_and_full_are_refused() {
        let client = key(1);
        let trusted = [PublicKey(client.verifying_key().to_bytes())];
        let stranger = signed(&key(2), &parts(b""), 1_000);
        let guard = ReplayGuard::with_capacity(1);
        assert!(matches!(
            guard.verify(&parts(b""), &stranger, &trusted, 1_000),
            Err(AuthFailure::Untrusted(_))
        ));
        let signature = signed(&client, &parts(b""), 1_000);
        assert!(matches!(
            guard.verify(
                &parts(b""),
                &signature,
                &trusted,
                1_000 + TIME_WINDOW_SECONDS + 1
            ),
            Err(AuthFailure::Stale { .. })
        ));
        guard
            .verify(&parts(b""), &signature, &trusted, 1_000)
            .expect("fresh");
        let mut second = signed(&client, &parts(b""), 1_000);
        second.nonce = [8; 16];
        second.signature = key(1)
            .sign(&canonical_request(
                &parts(b""),
                &trusted[0],
                1_000,
                &[8; 16],
            ))
            .to_bytes();
        assert_eq!(
            guard.verify(&parts(b""), &second, &trusted, 1_000),
            Err(AuthFailure::Busy)
        );
        // Once the first nonce's time has left the window, it is forgotten.
        second.time = 1_400;
        second.signature = key(1)
            .sign(&canonical_request(
                &parts(b""),
                &trusted[0],
                1_400,
                &[8; 16],
            ))
            .to_bytes();
        assert!(guard.verify(&parts(b""), &second, &trusted, 1_400).is_ok());
    }

    /// A test vector for a second implementation (FORMAT.md 18.2).
    #[test]
    fn canonical_form_vector() {
        let signer = PublicKey(key(1).verifying_key().to_bytes());
        let message = canonical_request(
            &RequestParts {
                method: "GET",
                path: "/main/pack/ab",
                query: "offset=0&length=4",
                body_hash: *blake3::hash(b"").as_bytes(),
            },
            &signer,
            1_700_000_000,
            &[0; 16],
        );
        let expected = format!(
            "cairn request v1\0GET\n/main/pack/ab\noffset=0&length=4\n{}\n1700000000\n{}\n{}",
            blake3::hash(b"").to_hex(),
            "0".repeat(32),
            signer.to_hex()
        );
        assert_eq!(message, expected.as_bytes());
    }
}
