//! The tree decoder meets arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = cairn_store::format::tree::Tree::decode(bytes, "tree");
});
