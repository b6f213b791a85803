//! The public-key object decoder meets arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = cairn_store::format::keys::PublicKeyObject::decode(bytes, "key");
});
