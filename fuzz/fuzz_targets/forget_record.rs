//! The forget record decoder (envelope, body, signature check) meets
//! arbitrary bytes.
#![no_main]
use cairn_store::format::records::{FORGET_DOMAIN, ForgetRecord, SignedRecord};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = SignedRecord::decode(bytes, FORGET_DOMAIN, "forget record") {
        let _ = record.body_unverified::<ForgetRecord>("forget record");
        let _ = record.verify(&[record.signer()]);
    }
});
