//! The deletion mark decoder (envelope, body, due time, signature check)
//! meets arbitrary bytes.
#![no_main]
use cairn_store::format::records::{DELETION_DOMAIN, DeletionMark, SignedRecord};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = SignedRecord::decode(bytes, DELETION_DOMAIN, "deletion mark") {
        if let Ok(mark) = record.body_unverified::<DeletionMark>("deletion mark") {
            let _ = mark.due();
        }
        let _ = record.verify(&[record.signer()]);
    }
});
