//! The keyring reader meets arbitrary bytes: the container's header checks
//! and decryption (keys made once per run), then envelope and body for
//! whatever opens.
#![no_main]
use cairn_store::Id;
use cairn_store::format::crypto::RepositoryKeys;
use cairn_store::format::keyring::Keyring;
use std::sync::OnceLock;

static KEYS: OnceLock<Option<RepositoryKeys>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Some(keys) = KEYS.get_or_init(|| RepositoryKeys::generate(Id([1; 32])).ok()) else {
        return;
    };
    let _ = Keyring::open(bytes, Id::of(bytes), keys);
});
