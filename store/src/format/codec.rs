//! Serialisation of repository objects: CBOR (via `ciborium`) for packs'
//! headers, index files, trees and manifests; JSON for the small objects a
//! person may want to read (config, keys); and *packed* CBOR, a CBOR value
//! in one zstd frame, for the large listings (pack headers and index file
//! bodies). Owns the decoding limits; never knows what the objects mean.

use crate::error::{Result, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Deep enough for every object cairn writes (trees are not nested in one
/// object: subdirectories are separate blobs), shallow enough that hostile
/// input cannot exhaust the stack.
const RECURSION_LIMIT: usize = 32;

#[allow(
    clippy::expect_used,
    reason = "encoding our own types into memory has no failure to report"
)]
pub fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and every type we encode has only
    // serialisable fields.
    ciborium::into_writer(value, &mut bytes).expect("CBOR encoding into memory cannot fail");
    bytes
}

pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8], object: &str) -> Result<T> {
    ciborium::de::from_reader_with_recursion_limit(bytes, RECURSION_LIMIT)
        .map_err(|error| StoreError::corrupt(object, format!("undecodable CBOR: {error}")))
}

/// The first four bytes of a zstd frame. A packed listing starts with
/// them; a CBOR listing never does (it is a map, whose first byte is
/// 0xA0 to 0xBF), so a reader tells the two apart by them.
pub const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Below this many CBOR bytes a listing is kept as it is: a pack of a few
/// blobs gains nothing from a frame, and small objects stay readable as
/// plain CBOR (FORMAT.md's worked examples among them).
const PACK_FROM: usize = 1024;

/// The zstd level of packed listings: they are a few hundred KiB per
/// 16 MiB pack, so a higher level costs nothing measurable, and the text
/// keys repeated for every blob are most of what compresses.
const PACKED_LEVEL: i32 = 3;

/// `value` as CBOR, packed into one zstd frame (with its content size)
/// when it is at least [`PACK_FROM`] bytes and the frame is smaller. Every
/// blob's entry repeats the same six text keys: a frame of them is about a
/// third of the CBOR (docs/PERFORMANCE.md, "First-night size").
pub fn to_packed_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let cbor = to_cbor(value);
    if cbor.len() < PACK_FROM {
        return cbor;
    }
    match zstd::bulk::compress(&cbor, PACKED_LEVEL) {
        Ok(frame) if frame.len() < cbor.len() => frame,
        _ => cbor,
    }
}

/// Decodes CBOR, or packed CBOR (see [`ZSTD_FRAME_MAGIC`]) whose frame
/// declares at most `limit` bytes of content; the declared size is checked
/// before anything is allocated for it, and a frame that does not declare
/// it is refused.
pub fn from_packed_cbor<T: DeserializeOwned>(bytes: &[u8], limit: u64, object: &str) -> Result<T> {
    from_packed_cbor_or(bytes, limit, object, |_| None)
}

/// As [`from_packed_cbor`], trying `direct` on the CBOR first: a decoder
/// of exactly what [`to_cbor`] writes for `T` (`format::listing_cbor`),
/// which answers `None` for anything else, so that the general decoder
/// decides (and names the error) whenever the bytes are not in that shape.
pub fn from_packed_cbor_or<T: DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
    object: &str,
    direct: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T> {
    if !bytes.starts_with(&ZSTD_FRAME_MAGIC) {
        return match direct(bytes) {
            Some(value) => Ok(value),
            None => from_cbor(bytes, object),
        };
    }
    let bad = |why: String| StoreError::corrupt(object, format!("packed listing: {why}"));
    let declared = match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(declared)) => declared,
        Ok(None) => return Err(bad("the zstd frame does not declare its size".into())),
        Err(_) => return Err(bad("not a zstd frame".into())),
    };
    if declared > limit {
        return Err(bad(format!(
            "the zstd frame declares {declared} bytes, more than the limit of {limit}"
        )));
    }
    let content = zstd::bulk::decompress(bytes, declared as usize)
        .map_err(|error| bad(format!("undecodable zstd frame: {error}")))?;
    if content.len() as u64 != declared {
        return Err(bad(format!(
            "the zstd frame holds {} bytes, it declares {declared}",
            content.len()
        )));
    }
    match direct(&content) {
        Some(value) => Ok(value),
        None => from_cbor(&content, object),
    }
}

#[allow(
    clippy::expect_used,
    reason = "encoding our own types into memory has no failure to report"
)]
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types have string keys and no failing Serialize impls.
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON encoding cannot fail");
    bytes.push(b'\n');
    bytes
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8], object: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::corrupt(object, format!("undecodable JSON: {error}")))
}

/// Refuses an object whose format version this build does not know.
pub fn check_version(found: u32, expected: u32, object: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            object,
            format!(
                "format version {found} is not supported (this cairn reads version {expected})"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        #[allow(dead_code)]
        list: Vec<u64>,
    }

    #[test]
    fn hostile_lengths_are_refused_without_huge_allocations() {
        // {"bytes": h'<claims 2^62 bytes>'} and a list claiming 2^62 items.
        let mut lying_bytes = vec![0xA2, 0x65];
        lying_bytes.extend_from_slice(b"bytes");
        lying_bytes.push(0x5B);
        lying_bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        lying_bytes.extend_from_slice(b"abc");
        assert!(from_cbor::<Holder>(&lying_bytes, "test").is_err());

        let mut lying_list = vec![0xA2, 0x65];
        lying_list.extend_from_slice(b"bytes");
        lying_list.push(0x40);
        lying_list.push(0x64);
        lying_list.extend_from_slice(b"list");
        lying_list.push(0x9B);
        lying_list.extend_from_slice(&(1u64 << 62).to_be_bytes());
        lying_list.push(0x01);
        assert!(from_cbor::<Holder>(&lying_list, "test").is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let nested = vec![0x81; 10_000];
        assert!(from_cbor::<serde_json::Value>(&nested, "test").is_err());
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Listing {
        names: Vec<String>,
    }

    fn listing(count: usize) -> Listing {
        Listing {
            names: (0..count).map(|n| format!("entry number {n}")).collect(),
        }
    }

    #[test]
    fn large_listings_are_packed_small_ones_stay_cbor_and_both_decode() {
        let small = to_packed_cbor(&listing(3));
        assert_eq!(small, to_cbor(&listing(3)));
        let large = to_packed_cbor(&listing(2000));
        assert!(large.starts_with(&ZSTD_FRAME_MAGIC));
        assert!(large.len() * 3 < to_cbor(&listing(2000)).len());
        let limit = 1 << 20;
        assert_eq!(
            from_packed_cbor::<Listing>(&small, limit, "t").unwrap(),
            listing(3)
        );
        assert_eq!(
            from_packed_cbor::<Listing>(&large, limit, "t").unwrap(),
            listing(2000)
        );
    }

    #[test]
    fn packed_listings_over_the_limit_or_without_a_declared_size_are_refused() {
        // A bomb: a small frame declaring far more than the object may hold
        // is refused before anything is allocated for it.
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap();
        assert!(bomb.len() < 4096);
        let error = from_packed_cbor::<Listing>(&bomb, 1 << 20, "index file x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("index file x") && error.contains("more than the limit"),
            "{error}"
        );
        // A frame written without its content size.
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, &to_cbor(&listing(100))).unwrap();
        let unsized_frame = encoder.finish().unwrap();
        let error = from_packed_cbor::<Listing>(&unsized_frame, 1 << 20, "t")
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not declare its size"), "{error}");
        // A frame that lies about its size, short or long.
        let mut lying = to_packed_cbor(&listing(2000));
        let last = lying.len() - 1;
        lying[last] ^= 0xFF;
        assert!(from_packed_cbor::<Listing>(&lying, 1 << 20, "t").is_err());
    }
}
