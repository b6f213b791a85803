//! A whole pack meets the pack parser, and every blob its header lists
//! meets the blob decoder.
#![no_main]
use cairn_store::Id;
use cairn_store::format::pack::{decode_blob, parse_pack};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let id = Id::of(bytes);
    if let Ok(header) = parse_pack(bytes, &id) {
        for blob in &header.blobs {
            let start = blob.offset as usize;
            if let Some(stored) = bytes.get(start..start + blob.length as usize) {
                let _ = decode_blob(blob, stored, &id);
            }
        }
    }
});
