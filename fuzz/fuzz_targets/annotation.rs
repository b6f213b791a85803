//! The annotation decoder (envelope, version, body and its rules,
//! signature check) meets arbitrary bytes.
#![no_main]
use cairn_store::Id;
use cairn_store::format::annotation::Annotation;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok((_, record)) = Annotation::decode(bytes, "annotation") {
        let _ = record.verify(&Id::of(b"repository"), &[record.signer()]);
    }
});
