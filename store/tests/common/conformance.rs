//! The checks every backend must pass, written once over `Arc<dyn Backend>`
//! and instantiated per backend by `backend_conformance.rs`. Each check
//! pins one promise of the `Backend` trait's documentation; a backend that
//! fails one is wrong, not the check.

use super::faulty_backend::{Fault, FaultyBackend, Strike};
use cairn_store::StoreError;
use cairn_store::backend::{Backend, Created, ObjectInfo, ObjectKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

pub const KINDS: [ObjectKind; 7] = [
    ObjectKind::Config,
    ObjectKind::Key,
    ObjectKind::Pack,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Forget,
    ObjectKind::Deletion,
];

/// How many objects the bulk checks use: object storage lists in pages of
/// a thousand, so its suite goes past one page.
#[derive(Clone, Copy)]
pub struct Scale {
    pub listed_objects: u32,
}

/// A name as the layers above make them: a 64-digit hex id.
pub fn id(seed: u32) -> String {
    format!("{seed:064x}")
}

/// The one name the config kind allows; an id for any other kind.
fn name_in(kind: ObjectKind, seed: u32) -> String {
    match kind {
        ObjectKind::Config => "config".into(),
        _ => id(seed),
    }
}

/// `length` bytes that differ from any other seed's.
pub fn content(seed: u32, length: usize) -> Vec<u8> {
    let mut bytes = vec![0; length];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut bytes);
    bytes
}

fn listed(backend: &dyn Backend, kind: ObjectKind) -> BTreeMap<String, u64> {
    let objects = backend.list(kind).expect("list");
    let map: BTreeMap<String, u64> = objects
        .iter()
        .map(|object| (object.name.clone(), object.size))
        .collect();
    assert_eq!(
        map.len(),
        objects.len(),
        "an object listed twice: {objects:?}"
    );
    map
}

fn assert_missing<T: std::fmt::Debug>(
    result: cairn_store::Result<T>,
    kind: ObjectKind,
    name: &str,
) {
    match result {
        Err(error @ StoreError::Missing { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(kind.label()) && message.contains(name),
                "the error names neither kind nor name: {message}"
            );
        }
        other => panic!("{} {name}: expected Missing, got {other:?}", kind.label()),
    }
}

fn assert_past_end(result: cairn_store::Result<Vec<u8>>, kind: ObjectKind, name: &str) {
    match result {
        Err(error @ StoreError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(kind.label())
                    && message.contains(name)
                    && message.contains("past its end"),
                "{message}"
            );
        }
        other => panic!(
            "expected a range past the end, got {:?}",
            other.map(|b| b.len())
        ),
    }
}

/// The location names where the objects are, for messages.
pub fn location_says_where(backend: &Arc<dyn Backend>, expected: &str) {
    let location = backend.location();
    assert!(
        location.contains(expected),
        "{location:?}, not {expected:?}"
    );
    assert!(backend.parallelism() >= 1);
}

/// Clearing away what crashed writers left never touches an object, nor
/// one being written while it runs.
pub fn removing_stale_temporaries_keeps_objects(backend: &Arc<dyn Backend>) {
    let kind = ObjectKind::Pack;
    for seed in 0..5 {
        backend
            .create(kind, &id(seed), &content(seed, 5_000))
            .unwrap();
    }
    let writer = {
        let backend = Arc::clone(backend);
        std::thread::spawn(move || {
            for seed in 5..25 {
                backend
                    .create(kind, &id(seed), &content(seed, 200_000))
                    .unwrap();
            }
        })
    };
    for _ in 0..5 {
        // Nothing here is a day old, so nothing is stale.
        assert_eq!(backend.remove_stale_temporaries().unwrap(), 0);
    }
    writer.join().expect("writer thread");
    for seed in 0..25 {
        let size = if seed < 5 { 5_000 } else { 200_000 };
        assert!(
            backend.read(kind, &id(seed), u64::MAX).unwrap() == content(seed, size),
            "{seed}"
        );
    }
}

/// A second create of a name leaves the first bytes, in every kind, and an
/// empty object is an object like any other.
pub fn create_is_create_if_absent(backend: &Arc<dyn Backend>) {
    for (seed, kind) in (1..).zip(KINDS) {
        let name = name_in(kind, seed);
        let first = content(seed, 100 + seed as usize);
        assert_eq!(backend.create(kind, &name, &first).unwrap(), Created::New);
        for second in [content(seed + 100, 7), Vec::new(), first.clone()] {
            assert_eq!(
                backend.create(kind, &name, &second).unwrap(),
                Created::AlreadyExisted,
                "{} {name}",
                kind.label()
            );
        }
        assert!(
            backend.read(kind, &name, u64::MAX).unwrap() == first,
            "{name}"
        );
        assert_eq!(listed(backend.as_ref(), kind)[&name], first.len() as u64);
    }
    let empty = id(99);
    assert_eq!(
        backend.create(ObjectKind::Index, &empty, b"").unwrap(),
        Created::New
    );
    assert_eq!(
        backend.create(ObjectKind::Index, &empty, b"late").unwrap(),
        Created::AlreadyExisted
    );
    assert_eq!(
        backend.read(ObjectKind::Index, &empty, u64::MAX).unwrap(),
        b""
    );
    assert_eq!(listed(backend.as_ref(), ObjectKind::Index)[&empty], 0);
}

/// Two writers start together on one name, many times: exactly one wins,
/// and the object is the winner's bytes, whole.
pub fn racing_writers_one_wins_whole(backend: &Arc<dyn Backend>, rounds: u32) {
    for round in 0..rounds {
        // One round races for the config, as two `init`s would.
        let kind = if round == 0 {
            ObjectKind::Config
        } else {
            ObjectKind::Pack
        };
        let name = name_in(kind, 1_000 + round);
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = (0..2u32)
            .map(|writer| {
                let backend = Arc::clone(backend);
                let barrier = Arc::clone(&barrier);
                let name = name.clone();
                // Different lengths, so a mixture of the two would show.
                let bytes = content(round * 2 + writer, 40_000 + 30_000 * writer as usize);
                std::thread::spawn(move || {
                    barrier.wait();
                    let created = backend.create(kind, &name, &bytes).unwrap();
                    (created, bytes)
                })
            })
            .collect();
        let results: Vec<(Created, Vec<u8>)> = writers
            .into_iter()
            .map(|writer| writer.join().expect("writer thread"))
            .collect();
        let winners: Vec<&Vec<u8>> = results
            .iter()
            .filter(|(created, _)| *created == Created::New)
            .map(|(_, bytes)| bytes)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let stored = backend.read(kind, &name, u64::MAX).unwrap();
        assert!(
            &stored == winners[0],
            "round {round}: the object is not the winner's bytes ({} bytes stored)",
            stored.len()
        );
    }
}

/// Whole and ranged reads return exactly the bytes asked for; ranges that
/// end past the end are corruption naming the object, whatever the size.
pub fn whole_and_ranged_reads(backend: &Arc<dyn Backend>) {
    let kind = ObjectKind::Pack;
    let name = id(7);
    let bytes = content(7, 1_000);
    backend.create(kind, &name, &bytes).unwrap();
    assert!(backend.read(kind, &name, u64::MAX).unwrap() == bytes);
    // A whole read takes a limit: an object of exactly the limit is read,
    // a larger one refused as corruption naming it and both sizes.
    assert!(backend.read(kind, &name, 1_000).unwrap() == bytes);
    match backend.read(kind, &name, 999) {
        Err(StoreError::Corrupt { object, reason }) => {
            assert!(object.contains(&name), "{object}");
            assert!(
                reason.contains("1000 bytes") && reason.contains("999"),
                "{reason}"
            );
        }
        other => panic!("an object over the limit must be refused: {other:?}"),
    }
    for (offset, length) in [
        (0, 1_000),
        (0, 1),
        (10, 100),
        (999, 1),
        (0, 0),
        (500, 0),
        (1_000, 0),
    ] {
        let range = offset as usize..(offset + length) as usize;
        assert_eq!(
            backend.read_range(kind, &name, offset, length).unwrap(),
            &bytes[range],
            "{offset}+{length}"
        );
    }
    for (offset, length) in [
        (990, 11),
        (0, 1_001),
        (1_000, 1),
        (1_001, 0),
        (5_000, 10),
        (u64::MAX, 1),
        (1, u64::MAX),
    ] {
        assert_past_end(backend.read_range(kind, &name, offset, length), kind, &name);
    }

    let empty = id(8);
    backend.create(kind, &empty, b"").unwrap();
    assert_eq!(backend.read(kind, &empty, u64::MAX).unwrap(), b"");
    assert_eq!(backend.read_range(kind, &empty, 0, 0).unwrap(), b"");
    assert_past_end(backend.read_range(kind, &empty, 0, 1), kind, &empty);
    assert_past_end(backend.read_range(kind, &empty, 1, 0), kind, &empty);
}

/// Reading an absent object, whole or in part, is `Missing` and names the
/// kind and the name, even when the range could not be valid either.
pub fn missing_objects_are_missing(backend: &Arc<dyn Backend>) {
    // Present under another kind, absent under these.
    backend.create(ObjectKind::Key, &id(3), b"key").unwrap();
    for (seed, kind) in (3..).zip(KINDS) {
        if kind == ObjectKind::Key {
            continue;
        }
        let name = name_in(kind, seed);
        assert_missing(backend.read(kind, &name, u64::MAX), kind, &name);
        for (offset, length) in [(0, 4), (0, 0), (u64::MAX, 1)] {
            assert_missing(backend.read_range(kind, &name, offset, length), kind, &name);
        }
    }
}

/// Each kind lists exactly its objects, each once, with its size and a
/// creation time from around the write.
pub fn listing_per_kind_with_sizes_and_times(backend: &Arc<dyn Backend>) {
    for kind in KINDS {
        assert!(
            listed(backend.as_ref(), kind).is_empty(),
            "{}",
            kind.label()
        );
    }
    // Object stores keep times to the second.
    let before = SystemTime::now() - Duration::from_secs(2);
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (index, kind) in KINDS.into_iter().enumerate() {
        let mut names = vec![name_in(kind, 1)];
        if kind != ObjectKind::Config {
            names.push(name_in(kind, 2));
            names.push("f".repeat(128));
        }
        if kind == ObjectKind::Pack {
            // Shorter than the local and S3 layouts' two-digit fan-out.
            names.extend(["a".to_string(), "ab".to_string(), "abc".to_string()]);
        }
        for (number, name) in names.into_iter().enumerate() {
            let size = index * 10 + number;
            backend
                .create(kind, &name, &content(size as u32, size))
                .unwrap();
            expected.insert((kind.label().to_string(), name), size as u64);
        }
    }
    let after = SystemTime::now() + Duration::from_secs(2);
    for kind in KINDS {
        let objects: Vec<ObjectInfo> = backend.list(kind).unwrap();
        let got: BTreeMap<(String, String), u64> = objects
            .iter()
            .map(|object| ((kind.label().to_string(), object.name.clone()), object.size))
            .collect();
        assert_eq!(got.len(), objects.len(), "{}: listed twice", kind.label());
        let want: BTreeMap<(String, String), u64> = expected
            .iter()
            .filter(|((label, _), _)| label == kind.label())
            .map(|(key, size)| (key.clone(), *size))
            .collect();
        assert_eq!(got, want, "{}", kind.label());
        for object in objects {
            let modified = object.modified.expect("a creation time");
            assert!(
                before <= modified && modified <= after,
                "{} {}: created at {modified:?}, written between {before:?} and {after:?}",
                kind.label(),
                object.name
            );
        }
    }
}

/// While one thread deletes objects, another lists: no listing fails,
/// names an object twice or names one never created, and every object
/// nobody deletes is in every listing.
pub fn listing_while_deleting(backend: &Arc<dyn Backend>, scale: Scale) {
    let kind = ObjectKind::Pack;
    let count = scale.listed_objects;
    let writers: Vec<_> = (0..4u32)
        .map(|writer| {
            let backend = Arc::clone(backend);
            std::thread::spawn(move || {
                for seed in (writer..count).step_by(4) {
                    let size = (seed % 17) as usize;
                    backend
                        .create(kind, &id(seed), &content(seed, size))
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let size_of = |name: &str| -> u64 {
        let seed = u32::from_str_radix(name, 16).expect("a name this check made");
        u64::from(seed % 17)
    };
    // Every fourth object stays.
    let kept: BTreeSet<String> = (0..count).step_by(4).map(id).collect();
    let doomed: Vec<String> = (0..count)
        .map(id)
        .filter(|name| !kept.contains(name))
        .collect();

    let deleting = Arc::new(AtomicBool::new(true));
    let deleters: Vec<_> = doomed
        .chunks(doomed.len().div_ceil(3))
        .map(|share| {
            let backend = Arc::clone(backend);
            let share = share.to_vec();
            std::thread::spawn(move || {
                for name in share {
                    backend.delete(kind, &name).unwrap();
                }
            })
        })
        .collect();
    let lister = {
        let backend = Arc::clone(backend);
        let deleting = Arc::clone(&deleting);
        let kept = kept.clone();
        std::thread::spawn(move || {
            let mut listings = 0;
            // At least one listing, however fast the deleters are.
            while listings == 0 || deleting.load(Ordering::SeqCst) {
                let names = listed(backend.as_ref(), kind);
                for (name, size) in &names {
                    assert_eq!(*size, size_of(name), "{name}");
                }
                let missing: Vec<&String> = kept
                    .iter()
                    .filter(|name| !names.contains_key(*name))
                    .collect();
                assert!(missing.is_empty(), "kept objects not listed: {missing:?}");
                listings += 1;
            }
            listings
        })
    };
    for deleter in deleters {
        deleter.join().expect("deleter thread");
    }
    deleting.store(false, Ordering::SeqCst);
    let listings = lister.join().expect("lister thread");
    assert!(listings >= 1);
    let left: BTreeSet<String> = listed(backend.as_ref(), kind).into_keys().collect();
    assert_eq!(left, kept);
}

/// Deleting an absent object is not an error; a deleted object is gone
/// from reads and listings, and its name can be created again.
pub fn delete_of_missing_is_not_an_error(backend: &Arc<dyn Backend>) {
    let kind = ObjectKind::Snapshot;
    let name = id(11);
    backend.delete(kind, &name).unwrap();
    backend.create(kind, &name, b"manifest").unwrap();
    backend.delete(kind, &name).unwrap();
    backend.delete(kind, &name).unwrap();
    assert_missing(backend.read(kind, &name, u64::MAX), kind, &name);
    assert!(listed(backend.as_ref(), kind).is_empty());
    assert_eq!(backend.create(kind, &name, b"again").unwrap(), Created::New);
    assert_eq!(backend.read(kind, &name, u64::MAX).unwrap(), b"again");
}

/// Names that could escape the repository's folders, or that are not
/// names at all, are refused by every method and store nothing.
pub fn invalid_names_are_refused(backend: &Arc<dyn Backend>) {
    let long = "a".repeat(129);
    let names = [
        "", ".", "..", "../x", "a/b", "/abs", "a.b", "x y", "a\\b", "ä", "a\0b", &long,
    ];
    let invalid = |result: cairn_store::Result<()>, what: &str, name: &str| {
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what} {name:?}: {result:?}"
        );
    };
    for kind in KINDS {
        for name in names {
            invalid(backend.create(kind, name, b"x").map(drop), "create", name);
            invalid(backend.read(kind, name, u64::MAX).map(drop), "read", name);
            invalid(
                backend.read_range(kind, name, 0, 1).map(drop),
                "read_range",
                name,
            );
            invalid(backend.delete(kind, name), "delete", name);
        }
    }
    // The config kind holds one object; another name there is refused too.
    for name in ["other", "keys", "data", "tmp", &id(1)] {
        let kind = ObjectKind::Config;
        invalid(backend.create(kind, name, b"x").map(drop), "create", name);
        invalid(backend.read(kind, name, u64::MAX).map(drop), "read", name);
    }
    for kind in KINDS {
        assert!(
            listed(backend.as_ref(), kind).is_empty(),
            "{}",
            kind.label()
        );
    }
}

/// Through a wrapper that fails one write: a write that never reached the
/// store leaves no object, one whose reply was lost leaves the whole
/// object, and in both cases a retry settles the name without an error.
pub fn injected_write_failures(backend: &Arc<dyn Backend>) {
    let kind = ObjectKind::Index;
    for (round, strike) in [Strike::BeforeRequest, Strike::AfterRequest]
        .into_iter()
        .enumerate()
    {
        let failing = 2;
        let faulty = FaultyBackend::new(
            Arc::clone(backend),
            Fault::Write {
                number: failing,
                strike,
            },
        );
        let seeds: Vec<u32> = (0..5).map(|number| round as u32 * 10 + number).collect();
        for (number, seed) in seeds.iter().enumerate() {
            let bytes = content(*seed, 10_000 + *seed as usize);
            let result = faulty.create(kind, &id(*seed), &bytes);
            assert_eq!(
                result.is_err(),
                number as u64 == failing,
                "{strike:?} #{number}"
            );
        }
        let names = listed(backend.as_ref(), kind);
        let failed = id(seeds[failing as usize]);
        let failed_bytes = content(
            seeds[failing as usize],
            10_000 + seeds[failing as usize] as usize,
        );
        match strike {
            Strike::BeforeRequest => {
                assert!(!names.contains_key(&failed), "a failed write left {failed}");
                assert_missing(backend.read(kind, &failed, u64::MAX), kind, &failed);
            }
            Strike::AfterRequest => {
                assert_eq!(names.get(&failed), Some(&(failed_bytes.len() as u64)));
                assert!(backend.read(kind, &failed, u64::MAX).unwrap() == failed_bytes);
            }
        }
        let retried = faulty.create(kind, &failed, &failed_bytes).unwrap();
        let expected = match strike {
            Strike::BeforeRequest => Created::New,
            Strike::AfterRequest => Created::AlreadyExisted,
        };
        assert_eq!(retried, expected, "{strike:?}");
        for seed in &seeds {
            let bytes = content(*seed, 10_000 + *seed as usize);
            assert!(
                backend.read(kind, &id(*seed), u64::MAX).unwrap() == bytes,
                "{seed}"
            );
            assert_eq!(
                listed(backend.as_ref(), kind)[&id(*seed)],
                bytes.len() as u64
            );
        }
    }
}

/// Through a wrapper that fails one read, whole or ranged: the failure is
/// an error, never short or altered bytes, and the reads around it and a
/// retry return exactly the object.
pub fn injected_read_failures(backend: &Arc<dyn Backend>) {
    let kind = ObjectKind::Pack;
    let name = id(21);
    let bytes = content(21, 50_000);
    backend.create(kind, &name, &bytes).unwrap();
    for strike in [Strike::BeforeRequest, Strike::AfterRequest] {
        for failing in 0..4u64 {
            let faulty = FaultyBackend::new(
                Arc::clone(backend),
                Fault::Read {
                    number: failing,
                    strike,
                },
            );
            for number in 0..4u64 {
                let result = if number % 2 == 0 {
                    faulty.read(kind, &name, u64::MAX).map(|read| read == bytes)
                } else {
                    faulty
                        .read_range(kind, &name, 1_000, 20_000)
                        .map(|read| read == bytes[1_000..21_000])
                };
                match result {
                    Err(StoreError::Io { .. }) if number == failing => {}
                    Ok(true) if number != failing => {}
                    other => panic!("{strike:?}, failing #{failing}, read #{number}: {other:?}"),
                }
            }
        }
    }
}

/// While objects of several megabytes are written, another thread lists
/// and reads: whatever it lists has its whole size, and whatever it reads
/// is the whole object.
pub fn readers_never_see_partial_objects(backend: &Arc<dyn Backend>, objects: u32) {
    let kind = ObjectKind::Pack;
    let size = 3 << 20;
    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let backend = Arc::clone(backend);
        let writing = Arc::clone(&writing);
        std::thread::spawn(move || {
            let mut verified = BTreeSet::new();
            while writing.load(Ordering::SeqCst) {
                for (name, listed_size) in listed(backend.as_ref(), kind) {
                    assert_eq!(listed_size, size as u64, "{name} listed at a partial size");
                    if verified.insert(name.clone()) {
                        let seed = u32::from_str_radix(&name, 16).expect("a name this check made");
                        let read = backend.read(kind, &name, u64::MAX).unwrap();
                        assert!(read == content(seed, size), "{name} read partial or wrong");
                    }
                }
            }
            verified.len()
        })
    };
    for seed in 0..objects {
        assert_eq!(
            backend
                .create(kind, &id(seed), &content(seed, size))
                .unwrap(),
            Created::New
        );
    }
    writing.store(false, Ordering::SeqCst);
    let verified = reader.join().expect("reader thread");
    assert!(verified <= objects as usize);
    assert_eq!(listed(backend.as_ref(), kind).len(), objects as usize);
}
