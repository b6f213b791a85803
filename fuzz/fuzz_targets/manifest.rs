//! The manifest decoder, its body decoder and signature check meet
//! arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(manifest) = cairn_store::format::manifest::SignedManifest::decode(bytes, "manifest") {
        let _ = manifest.body_unverified();
        // Any repository: the check must not panic whatever the envelope names.
        let _ = manifest.verify(&cairn_store::Id([0; 32]), &[manifest.signer()]);
    }
});
