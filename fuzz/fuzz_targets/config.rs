//! The repository config decoder meets arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = cairn_store::format::config::RepositoryConfig::decode(bytes);
});
