//! The restore journal's decoder meets damaged and hostile bytes (tests
//! only). The journal travels in a safety snapshot, so it is repository
//! bytes like any other; its decoder is crate-private, so it is fuzzed
//! here rather than in `store/tests/hostile_input.rs` or `fuzz/`.

use super::safety::{CreatedKind, CreatedPath, Journal, JournalComponent, SavedDirectory};
use crate::id::Id;
use proptest::prelude::*;

fn sample() -> Vec<u8> {
    Journal {
        format: "cairn-restore-journal-v1".into(),
        restored: Id::of(b"snapshot"),
        components: vec![JournalComponent {
            name: "db".into(),
            destination: "/srv/db".into(),
            saved: true,
            created: vec![CreatedPath {
                path: "/srv/db/new.sqlite".into(),
                kind: CreatedKind::File,
                hash: Some(Id::of(b"content")),
            }],
            directories: vec![SavedDirectory {
                path: "/srv/db".into(),
                mode: 0o750,
                uid: 1000,
                gid: 1000,
                mtime: 1_700_000_000,
                mtime_nanos: 7,
            }],
        }],
    }
    .encode()
}

#[test]
fn an_intact_journal_decodes_and_a_foreign_format_is_refused() {
    let journal = Journal::decode(&sample()).unwrap();
    assert_eq!(journal.components[0].created.len(), 1);
    let foreign = String::from_utf8(sample())
        .unwrap()
        .replace("cairn-restore-journal-v1", "cairn-restore-journal-v9");
    assert!(Journal::decode(foreign.as_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn damaged_journals_never_panic_the_decoder(
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = sample();
        for (at, bits) in flips {
            let at = at % bytes.len();
            bytes[at] ^= bits;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = Journal::decode(&bytes);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Journal::decode(&bytes);
    }
}
