//! One conformance suite, every backend: the local directory, S3 on moto's
//! loopback server, and memory each run the same checks
//! (`common/conformance.rs`), one test per check and backend, so a failure
//! names both.
//!
//! The S3 tests need the server's venv, like `s3_backend.rs`: without it
//! they fail with a message saying to run `bash scripts/s3-server.sh`
//! (which `scripts/test.sh` does).

#[path = "common/conformance.rs"]
mod conformance;
#[path = "common/faulty_backend.rs"]
mod faulty_backend;
#[path = "../../tests/common/s3.rs"]
mod s3_server;

use cairn_store::backend::{
    Backend, LocalBackend, MemoryBackend, S3Backend, S3Location, S3Options,
};
use conformance::Scale;
use std::any::Any;
use std::sync::{Arc, Once};

/// A backend under test and what must outlive it (a directory, a server).
struct Fixture {
    backend: Arc<dyn Backend>,
    /// What its location must name.
    location: String,
    _keep: Box<dyn Any>,
}

fn local() -> Fixture {
    let directory = tempfile::tempdir().expect("temporary directory");
    let root = directory.path().join("repository");
    Fixture {
        backend: Arc::new(LocalBackend::new(&root)),
        location: root.display().to_string(),
        _keep: Box::new(directory),
    }
}

fn memory() -> Fixture {
    Fixture {
        backend: Arc::new(MemoryBackend::new()),
        location: "memory:".into(),
        _keep: Box::new(()),
    }
}

fn s3() -> Fixture {
    static CREDENTIALS: Once = Once::new();
    CREDENTIALS.call_once(|| {
        for (name, value) in s3_server::environment("unused") {
            if name != "CAIRN_S3_ENDPOINT" {
                // SAFETY: set once, before any backend of this process reads
                // the environment; every test waits on the `Once`.
                unsafe { std::env::set_var(name, value) };
            }
        }
    });
    let server = s3_server::S3Server::start();
    let options = S3Options {
        endpoint: Some(server.endpoint.clone()),
    };
    let url = format!("s3://{}/conformance", s3_server::BUCKET);
    let location = S3Location::parse(&url).expect("an S3 location");
    Fixture {
        backend: Arc::new(S3Backend::open(location, &options).expect("open the S3 backend")),
        location: url,
        _keep: Box::new(server),
    }
}

/// One test per check for the backend `$fixture` makes.
macro_rules! conformance_tests {
    ($backend:ident, $fixture:expr, $scale:expr, $race_rounds:expr, $large_objects:expr) => {
        mod $backend {
            use super::*;

            fn backend() -> Fixture {
                $fixture()
            }

            #[test]
            fn location_says_where() {
                let fixture = backend();
                conformance::location_says_where(&fixture.backend, &fixture.location);
            }

            #[test]
            fn removing_stale_temporaries_keeps_objects() {
                conformance::removing_stale_temporaries_keeps_objects(&backend().backend);
            }

            #[test]
            fn create_is_create_if_absent() {
                conformance::create_is_create_if_absent(&backend().backend);
            }

            #[test]
            fn racing_writers_one_wins_whole() {
                conformance::racing_writers_one_wins_whole(&backend().backend, $race_rounds);
            }

            #[test]
            fn whole_and_ranged_reads() {
                conformance::whole_and_ranged_reads(&backend().backend);
            }

            #[test]
            fn missing_objects_are_missing() {
                conformance::missing_objects_are_missing(&backend().backend);
            }

            #[test]
            fn listing_per_kind_with_sizes_and_times() {
                conformance::listing_per_kind_with_sizes_and_times(&backend().backend);
            }

            #[test]
            fn listing_while_deleting() {
                conformance::listing_while_deleting(&backend().backend, $scale);
            }

            #[test]
            fn delete_of_missing_is_not_an_error() {
                conformance::delete_of_missing_is_not_an_error(&backend().backend);
            }

            #[test]
            fn invalid_names_are_refused() {
                conformance::invalid_names_are_refused(&backend().backend);
            }

            #[test]
            fn injected_write_failures() {
                conformance::injected_write_failures(&backend().backend);
            }

            #[test]
            fn injected_read_failures() {
                conformance::injected_read_failures(&backend().backend);
            }

            #[test]
            fn readers_never_see_partial_objects() {
                conformance::readers_never_see_partial_objects(&backend().backend, $large_objects);
            }
        }
    };
}

conformance_tests!(
    local,
    local,
    Scale {
        listed_objects: 600
    },
    50,
    6
);
conformance_tests!(
    memory,
    memory,
    Scale {
        listed_objects: 600
    },
    50,
    6
);
// Past one page of a listing (a thousand keys); fewer rounds, as each
// request is a round trip to a Python server.
conformance_tests!(
    s3,
    s3,
    Scale {
        listed_objects: 1_100
    },
    12,
    3
);

/// Failures inside the local backend itself, not around it: the process
/// may write no file larger than 64 KiB, so writing an object's bytes fails
/// part of the way through, as on a full disk.
mod local_faults {
    use super::conformance::{content, id};
    use cairn_store::StoreError;
    use cairn_store::backend::{Backend, LocalBackend, ObjectKind};
    use std::path::Path;
    use std::process::Command;

    /// Set in the child process that runs under the limit: the repository.
    const CHILD: &str = "CAIRN_CONFORMANCE_LIMITED_CHILD";
    const LIMIT: u64 = 64 * 1024;

    /// In the child: the limit holds for this process alone, which is why
    /// the test runs itself again rather than lowering its own.
    fn write_under_the_limit(root: &Path) {
        // SAFETY: plain system calls on this process's own settings; the
        // ignored signal turns the limit into an EFBIG error from write.
        let limited = unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: LIMIT as libc::rlim_t,
                rlim_max: LIMIT as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit)
        };
        assert_eq!(limited, 0, "setrlimit: {}", std::io::Error::last_os_error());
        let backend = LocalBackend::new(root);
        // Through the page cache, and with O_DIRECT (from 1 MiB).
        for (seed, size) in [(1, 200_000), (2, 3 << 20)] {
            let result = backend.create(ObjectKind::Pack, &id(seed), &content(seed, size));
            assert!(
                matches!(result, Err(StoreError::Io { .. })),
                "a write of {size} bytes under a {LIMIT}-byte limit: {result:?}"
            );
        }
        backend
            .create(ObjectKind::Pack, &id(3), &content(3, 1_000))
            .expect("a write under the limit");
    }

    #[test]
    fn a_write_failing_midway_leaves_nothing() {
        if let Some(root) = std::env::var_os(CHILD) {
            write_under_the_limit(Path::new(&root));
            return;
        }
        let directory = tempfile::tempdir().expect("temporary directory");
        let root = directory.path().join("repository");
        let output = Command::new(std::env::current_exe().expect("this test's executable"))
            .args([
                "--exact",
                "local_faults::a_write_failing_midway_leaves_nothing",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &root)
            .output()
            .expect("run the limited child");
        assert!(
            output.status.success(),
            "the limited child failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The child ran the test rather than filtering it away.
        assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));

        let backend = LocalBackend::new(&root);
        let listed: Vec<String> = backend
            .list(ObjectKind::Pack)
            .expect("list")
            .into_iter()
            .map(|object| object.name)
            .collect();
        assert_eq!(listed, [id(3)]);
        for seed in [1, 2] {
            assert!(matches!(
                backend.read(ObjectKind::Pack, &id(seed), u64::MAX),
                Err(StoreError::Missing { .. })
            ));
        }
        let leftovers: Vec<_> = std::fs::read_dir(root.join("tmp"))
            .expect("the temporary folder")
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}
