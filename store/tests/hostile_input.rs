//! Every decoder of repository objects meets damaged and hostile bytes:
//! valid objects with bytes flipped, truncated or extended, and random
//! bytes. Each must return an error (or a value that passes its own
//! checks), never panic, and never hang.
//!
//! This is how CI fuzzes (it has no nightly toolchain): a bounded number of
//! cases per decoder, a few seconds in all. `fuzz/` holds the same decoders
//! as cargo-fuzz targets for longer local runs (`cargo +nightly fuzz run
//! TARGET`). The decoders of local files (the index cache's run files, the
//! restore journal) are crate-private and meet hostile bytes in their own
//! unit tests (`index::runs`, `ops::restore::hostile_journal`).

use cairn_chunker::ChunkerParams;
use cairn_store::Id;
use cairn_store::format::annotation::Annotation;
use cairn_store::format::config::RepositoryConfig;
use cairn_store::format::crypto::RepositoryKeys;
use cairn_store::format::index::{IndexFile, PackEntry};
use cairn_store::format::keyring::{Entry, Keyring, Role, Status};
use cairn_store::format::keys::{PublicKeyObject, generate_signing_key, public_key_of};
use cairn_store::format::manifest::{
    ChunkerRecord, ComponentKind, ComponentRecord, ComponentStats, SignedManifest, SnapshotBody,
};
use cairn_store::format::pack::{
    BlobKind, PackWriter, compress_blob, compress_frame, decode_blob, parse_pack,
};
use cairn_store::format::records::{
    DELETION_DOMAIN, DeletionMark, FORGET_DOMAIN, ForgetRecord, ForgottenSnapshot, MarkReason,
    MarkedPack, SignedRecord,
};
use cairn_store::format::tree::{EntryKind, Tree, TreeEntry};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A pack of blobs stored every way: as they are, one zstd frame each, as
/// byte planes, and three small blobs sharing one frame.
fn sample_pack() -> Vec<u8> {
    let mut writer = PackWriter::new();
    let floats: Vec<u8> = (0..2048u32)
        .flat_map(|n| (n as f32 * 0.37).sin().to_le_bytes())
        .collect();
    for content in [
        &b"alpha alpha alpha alpha"[..],
        &[7u8; 3000][..],
        b"z",
        &floats,
    ] {
        let (compression, stored) = compress_blob(content, 3);
        writer.add(
            BlobKind::Data,
            Id::of(content),
            content.len() as u32,
            compression,
            &stored,
        );
    }
    let members: Vec<Vec<u8>> = (0..3u8)
        .map(|n| {
            format!("row {n}, words and words; ")
                .repeat(20)
                .into_bytes()
        })
        .collect();
    let listed: Vec<_> = members
        .iter()
        .map(|member| (BlobKind::Data, Id::of(member), member.len() as u32))
        .collect();
    let frame = compress_frame(&members.concat(), 3).expect("the rows compress");
    writer.add_frame(&listed, (frame.0, &frame.1));
    writer.finish().1
}

fn sample_forget_record() -> Vec<u8> {
    let record = ForgetRecord::new(
        "2026-11-22T03:24:49.000000000Z".into(),
        "host".into(),
        "user".into(),
        "keep-daily 7".into(),
        vec![ForgottenSnapshot {
            id: Id::of(b"old snapshot"),
            time: "2026-11-01T03:00:00Z".into(),
            host: "host".into(),
            components: vec!["db".into()],
            tags: vec!["nightly".into()],
        }],
    );
    SignedRecord::sign(
        &record,
        FORGET_DOMAIN,
        &SAMPLE_REPOSITORY,
        &generate_signing_key().unwrap(),
    )
    .encode()
}

fn sample_deletion_mark() -> Vec<u8> {
    let mark = DeletionMark::new(
        "2026-11-22T03:24:49.000000000Z".into(),
        3600,
        "host".into(),
        vec![MarkedPack {
            id: Id::of(b"pack"),
            size: 4096,
            reason: MarkReason::Repacked,
        }],
    );
    SignedRecord::sign(
        &mark,
        DELETION_DOMAIN,
        &SAMPLE_REPOSITORY,
        &generate_signing_key().unwrap(),
    )
    .encode()
}

fn sample_annotation() -> Vec<u8> {
    let annotation = Annotation::new(
        Id::of(b"snapshot"),
        2,
        ("2026-12-06T13:00:00Z".into(), "host".into(), "user".into()),
        vec!["keep".into(), "pre-migration".into()],
        [("ticket".to_string(), "4711".to_string())].into(),
    )
    .unwrap();
    annotation
        .sign(&SAMPLE_REPOSITORY, &generate_signing_key().unwrap())
        .encode()
}

fn sample_tree() -> Vec<u8> {
    let file = TreeEntry {
        name: b"file.txt".to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        mtime_nanos: 5,
        ctime: 1_700_000_001,
        ctime_nanos: 6,
        inode: 42,
        size: 3,
        chunks: Some(vec![Id::of(b"abc")]),
        hash: Some(Id::of(b"abc")),
        subtree: None,
        target: None,
    };
    let mut link = file.clone();
    link.name = b"link".to_vec();
    link.kind = EntryKind::Symlink;
    link.chunks = None;
    link.hash = None;
    link.size = 0;
    link.target = Some(b"file.txt".to_vec());
    Tree::new(vec![file, link]).encode()
}

fn sample_index() -> Vec<u8> {
    let pack = sample_pack();
    let header = parse_pack(&pack, &Id::of(&pack)).unwrap();
    IndexFile::new(vec![PackEntry {
        id: Id::of(&pack),
        size: pack.len() as u64,
        blobs: header.blobs,
    }])
    .encode()
}

fn sample_manifest() -> Vec<u8> {
    let body = SnapshotBody {
        version: SnapshotBody::new_version(),
        time: "2026-11-22T03:24:49.000000000Z".into(),
        host: "host".into(),
        user: "user".into(),
        tags: vec!["nightly".into()],
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        parent: None,
        chunker: ChunkerRecord {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        components: vec![ComponentRecord {
            name: "db".into(),
            kind: ComponentKind::Directory,
            source: "/srv/db".into(),
            tree: Id::of(b"tree"),
            stats: ComponentStats::default(),
            root: None,
            fixed_chunk_size: None,
            sqlite_pages_per_chunk: None,
            sqlite_journal_mode: None,
        }],
        problems: vec![],
        cairn_version: "test".into(),
        app_version: None,
    };
    SignedManifest::sign(&body, &SAMPLE_REPOSITORY, &generate_signing_key().unwrap()).encode()
}

/// The repository the sample manifest and records are sealed for.
const SAMPLE_REPOSITORY: Id = Id([7; 32]);

/// The keys the sample keyring is sealed with, made once.
fn keyring_keys() -> &'static (RepositoryKeys, cairn_store::format::keys::SigningKey) {
    static KEYS: OnceLock<(RepositoryKeys, cairn_store::format::keys::SigningKey)> =
        OnceLock::new();
    KEYS.get_or_init(|| {
        (
            RepositoryKeys::generate(SAMPLE_REPOSITORY).unwrap(),
            generate_signing_key().unwrap(),
        )
    })
}

/// A keyring listing its owner and a revoked writer with kept snapshots.
fn sample_keyring() -> Vec<u8> {
    let (keys, owner) = keyring_keys();
    let mut keyring = Keyring::first(public_key_of(owner), "owner", "2026-12-06T10:00:00Z");
    keyring.entries.push(Entry {
        key: public_key_of(&generate_signing_key().unwrap()).0,
        role: Role::Writer,
        label: "host".into(),
        added: "2026-12-06T10:00:00Z".into(),
        status: Status::Revoked {
            time: "2026-12-06T11:00:00Z".into(),
            kept: vec![Id::of(b"kept")],
        },
    });
    keyring.seal(keys, owner).unwrap()
}

/// Runs every decoder on `bytes`; only a panic fails.
fn decode_everything(bytes: &[u8]) {
    let id = Id::of(bytes);
    let _ = Keyring::open(bytes, id, &keyring_keys().0);
    let _ = RepositoryConfig::decode(bytes);
    let _ = PublicKeyObject::decode(bytes, "key");
    if let Ok(header) = parse_pack(bytes, &id) {
        // Every blob from its stored bytes, as verify and repack take them.
        for blob in &header.blobs {
            let stored = usize::try_from(blob.offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(blob.length as usize)?));
            if let Some(stored) = stored {
                let _ = decode_blob(blob, stored, &id);
            }
        }
    }
    for domain in [FORGET_DOMAIN, DELETION_DOMAIN] {
        if let Ok(record) = SignedRecord::decode(bytes, domain, "record") {
            let _ = record.verify(&SAMPLE_REPOSITORY, &[]);
            let _ = record.body_unverified::<ForgetRecord>("forget record");
            if let Ok(mark) = record.body_unverified::<DeletionMark>("deletion mark") {
                let _ = mark.due();
            }
        }
    }
    if let Ok((_, record)) = Annotation::decode(bytes, "annotation") {
        let _ = record.verify(&SAMPLE_REPOSITORY, &[]);
    }
    let _ = IndexFile::decode(bytes, "index");
    let _ = Tree::decode(bytes, "tree");
    if let Ok(manifest) = SignedManifest::decode(bytes, "manifest") {
        let _ = manifest.body_unverified();
        let _ = manifest.verify(&SAMPLE_REPOSITORY, &[]);
    }
    if let Ok(index) = IndexFile::decode(bytes, "index") {
        for pack in &index.packs {
            for blob in &pack.blobs {
                let _ = decode_blob(blob, bytes, &pack.id);
            }
        }
    }
}

/// One intact object of every kind, made once (signing keys are slow to
/// make in a debug build).
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let key = public_key_of(&generate_signing_key().unwrap());
        vec![
            RepositoryConfig::new(Id::of(b"repo"), ChunkerParams::DEFAULT).encode(),
            PublicKeyObject::new(key).encode(),
            sample_pack(),
            sample_index(),
            sample_tree(),
            sample_manifest(),
            sample_forget_record(),
            sample_deletion_mark(),
            sample_keyring(),
            sample_annotation(),
        ]
    })
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bits: u8 },
    Truncate { at: usize },
    Extend { bytes: Vec<u8> },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Damage::Flip { at, bits }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(|bytes| Damage::Extend { bytes }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for step in damage {
        if bytes.is_empty() {
            break;
        }
        match step {
            Damage::Flip { at, bits } => {
                let at = at % bytes.len();
                bytes[at] ^= bits;
            }
            Damage::Truncate { at } => bytes.truncate(at % bytes.len()),
            Damage::Extend { bytes: extra } => bytes.extend_from_slice(extra),
            Damage::Overwrite { at, bytes: over } => {
                let at = at % bytes.len();
                for (offset, byte) in over.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + offset) {
                        *slot = *byte;
                    }
                }
            }
        }
    }
    bytes
}

proptest! {
    // Each decoder meets tens of thousands of hostile inputs in a few seconds
    // of a debug build.
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn damaged_objects_never_panic_a_decoder(
        which in 0usize..9,
        damage in proptest::collection::vec(damage(), 1..4),
    ) {
        let bytes = apply(samples()[which].clone(), &damage);
        decode_everything(&bytes);
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }
}

#[test]
fn intact_samples_decode() {
    let pack = sample_pack();
    assert!(parse_pack(&pack, &Id::of(&pack)).is_ok());
    assert!(IndexFile::decode(&sample_index(), "index").is_ok());
    assert!(Tree::decode(&sample_tree(), "tree").is_ok());
    let manifest = SignedManifest::decode(&sample_manifest(), "manifest").unwrap();
    assert!(manifest.body_unverified().is_ok());
    let header = parse_pack(&pack, &Id::of(&pack)).unwrap();
    assert_eq!(
        header.blobs.len(),
        7,
        "four sole blobs and a frame of three"
    );
    for blob in &header.blobs {
        let stored = &pack[blob.offset as usize..][..blob.length as usize];
        assert!(decode_blob(blob, stored, &Id::of(&pack)).is_ok());
    }
    let keyring = sample_keyring();
    let opened = Keyring::open(&keyring, Id::of(&keyring), &keyring_keys().0).unwrap();
    assert_eq!(opened.keyring.entries.len(), 2);
    let (annotation, _) = Annotation::decode(&sample_annotation(), "a").unwrap();
    assert_eq!(annotation.tags, vec!["keep", "pre-migration"]);
    let forget = SignedRecord::decode(&sample_forget_record(), FORGET_DOMAIN, "f").unwrap();
    assert!(forget.body_unverified::<ForgetRecord>("f").is_ok());
    let mark = SignedRecord::decode(&sample_deletion_mark(), DELETION_DOMAIN, "d").unwrap();
    assert!(
        mark.body_unverified::<DeletionMark>("d")
            .unwrap()
            .due()
            .is_some()
    );
}

#[test]
fn every_single_byte_flip_of_a_manifest_is_caught() {
    // Each flipped byte either breaks decoding or the signature: a damaged
    // manifest never verifies.
    let original = sample_manifest();
    let signer = SignedManifest::decode(&original, "m").unwrap().signer();
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        if let Ok(manifest) = SignedManifest::decode(&bytes, "m") {
            assert!(
                manifest.verify(&SAMPLE_REPOSITORY, &[signer]).is_err(),
                "flipping byte {at} left a manifest that verifies"
            );
        }
    }
}
