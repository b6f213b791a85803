//! The S3 backend keeps the backend contract against a real S3-compatible
//! server (moto's, on loopback): create-only writes, whole and ranged reads,
//! paginated listing with sizes and times, deletion, multipart uploads, and
//! errors that name the bucket and what was being done.

#[path = "../../tests/common/s3.rs"]
mod s3_server;

use cairn_store::StoreError;
use cairn_store::backend::{
    Backend, ConditionalPut, Created, MULTIPART_THRESHOLD, ObjectKind, S3Backend, S3Location,
    S3Options,
};
use s3_server::{BUCKET, Relay, S3Server};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The AWS variables the backend reads, set once before any test reads
/// them (the values are the same for every server).
fn set_credentials() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        for (name, value) in s3_server::environment("unused") {
            if name != "CAIRN_S3_ENDPOINT" {
                // SAFETY: set once, before any backend of this process reads
                // the environment; every test waits on the `Once`.
                unsafe { std::env::set_var(name, value) };
            }
        }
    });
}

fn backend(server: &S3Server, url: &str) -> S3Backend {
    set_credentials();
    let options = S3Options {
        endpoint: Some(server.endpoint.clone()),
    };
    S3Backend::open(S3Location::parse(url).unwrap(), &options).unwrap()
}

fn id(seed: u32) -> String {
    format!("{seed:064x}")
}

#[test]
fn create_is_create_only_and_reads_are_exact() {
    let server = S3Server::start();
    let backend = backend(&server, &format!("s3://{BUCKET}/repo"));
    let name = "ab".repeat(32);
    assert_eq!(
        backend.create(ObjectKind::Pack, &name, b"first").unwrap(),
        Created::New
    );
    assert_eq!(
        backend.create(ObjectKind::Pack, &name, b"second").unwrap(),
        Created::AlreadyExisted
    );
    assert_eq!(
        backend.read(ObjectKind::Pack, &name, u64::MAX).unwrap(),
        b"first"
    );
    // The key layout mirrors the local one, under the prefix.
    assert_eq!(server.get(&format!("repo/data/ab/{name}")), b"first");
    assert_eq!(
        backend.read_range(ObjectKind::Pack, &name, 1, 3).unwrap(),
        b"irs"
    );
    assert_eq!(
        backend.read_range(ObjectKind::Pack, &name, 5, 0).unwrap(),
        b""
    );
    for (offset, length) in [(3, 5), (5, 1), (9, 2)] {
        let error = backend
            .read_range(ObjectKind::Pack, &name, offset, length)
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt { .. })
                && error.to_string().contains("past its end"),
            "{offset}+{length}: {error}"
        );
    }

    // config is create-only too: a second init cannot replace it.
    assert_eq!(
        backend
            .create(ObjectKind::Config, "config", b"one")
            .unwrap(),
        Created::New
    );
    assert_eq!(
        backend
            .create(ObjectKind::Config, "config", b"two")
            .unwrap(),
        Created::AlreadyExisted
    );
    assert_eq!(server.get("repo/config"), b"one");
    let config = backend.list(ObjectKind::Config).unwrap();
    assert_eq!((config[0].name.as_str(), config[0].size), ("config", 3));
}

#[test]
fn missing_objects_are_missing_and_deletes_are_idempotent() {
    let server = S3Server::start();
    let backend = backend(&server, &format!("s3://{BUCKET}"));
    assert!(backend.list(ObjectKind::Config).unwrap().is_empty());
    for result in [
        backend.read(ObjectKind::Index, &id(1), u64::MAX),
        backend.read_range(ObjectKind::Index, &id(1), 0, 4),
    ] {
        match result {
            Err(StoreError::Missing { object }) => assert!(object.contains(&id(1)), "{object}"),
            other => panic!("expected Missing, got {other:?}"),
        }
    }
    backend
        .create(ObjectKind::Snapshot, &id(2), b"manifest")
        .unwrap();
    assert_eq!(server.get(&format!("snapshots/{}", id(2))), b"manifest");
    backend.delete(ObjectKind::Snapshot, &id(2)).unwrap();
    backend.delete(ObjectKind::Snapshot, &id(2)).unwrap();
    assert!(backend.list(ObjectKind::Snapshot).unwrap().is_empty());
    assert!(matches!(
        backend.read(ObjectKind::Snapshot, &id(2), u64::MAX),
        Err(StoreError::Missing { .. })
    ));
    // Names that could leave the prefix are refused before any request.
    assert!(backend.create(ObjectKind::Index, "../x", b"1").is_err());
}

#[test]
fn listing_pages_through_more_than_a_thousand_objects_with_sizes_and_times() {
    let server = S3Server::start();
    let backend = std::sync::Arc::new(backend(&server, &format!("s3://{BUCKET}/deep/repo")));
    let count = 1_050u32;
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(300);
    // Several writers at once, as a backup's uploaders are.
    let threads: Vec<_> = (0..8u32)
        .map(|thread| {
            let backend = backend.clone();
            std::thread::spawn(move || {
                for seed in (thread..count).step_by(8) {
                    let bytes = vec![7u8; (seed % 13) as usize + 1];
                    backend.create(ObjectKind::Pack, &id(seed), &bytes).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Other kinds and stray keys do not show up as packs.
    backend.create(ObjectKind::Index, &id(5), b"index").unwrap();
    server.put("deep/repo/data/not-a-fan-out/x", b"stray");
    server.put("deep/repo/data/ab/cd", b"in the wrong fan-out");

    let mut listed = backend.list(ObjectKind::Pack).unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.len(), count as usize);
    for (seed, object) in listed.iter().enumerate() {
        assert_eq!(object.name, id(seed as u32));
        assert_eq!(object.size, (seed as u64 % 13) + 1, "{}", object.name);
        let modified = object.modified.expect("S3 lists modification times");
        assert!(modified > before, "{}: {modified:?}", object.name);
    }
    let indexes = backend.list(ObjectKind::Index).unwrap();
    assert_eq!(indexes.len(), 1);
    assert_eq!((indexes[0].name.clone(), indexes[0].size), (id(5), 5));
}

#[test]
fn large_objects_go_up_in_parts_and_read_back_whole() {
    let server = S3Server::start();
    let backend = backend(&server, &format!("s3://{BUCKET}/repo"));
    let size = MULTIPART_THRESHOLD + 5 * 1024 * 1024 + 123;
    let bytes: Vec<u8> = (0..size).map(|index| (index * 31 % 251) as u8).collect();
    let name = id(42);
    assert_eq!(
        backend.create(ObjectKind::Pack, &name, &bytes).unwrap(),
        Created::New
    );
    assert_eq!(
        backend.create(ObjectKind::Pack, &name, &bytes).unwrap(),
        Created::AlreadyExisted
    );
    assert!(backend.read(ObjectKind::Pack, &name, u64::MAX).unwrap() == bytes);
    let offset = MULTIPART_THRESHOLD as u64 - 10;
    assert_eq!(
        backend
            .read_range(ObjectKind::Pack, &name, offset, 1_000)
            .unwrap(),
        &bytes[offset as usize..offset as usize + 1_000]
    );
    let listed = backend.list(ObjectKind::Pack).unwrap();
    assert_eq!(listed[0].size, size as u64);
}

#[test]
fn a_missing_bucket_is_a_clear_error_naming_it() {
    let server = S3Server::start();
    let backend = backend(&server, "s3://no-such-bucket-here/repo");
    let errors = [
        backend
            .read(ObjectKind::Config, "config", u64::MAX)
            .unwrap_err(),
        backend.list(ObjectKind::Config).unwrap_err(),
        backend.list(ObjectKind::Pack).unwrap_err(),
        backend.create(ObjectKind::Key, &id(1), b"key").unwrap_err(),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(
            matches!(error, StoreError::Io { .. })
                && message.contains("S3 bucket `no-such-bucket-here`")
                && message.contains("no such bucket"),
            "{message}"
        );
    }
}

#[test]
fn an_unreachable_service_fails_with_the_bucket_and_the_operation() {
    set_credentials();
    // A port nothing listens on; retries end after a few seconds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = S3Options {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
    };
    let backend = S3Backend::open(
        S3Location::parse(&format!("s3://{BUCKET}/repo")).unwrap(),
        &options,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let message = backend
        .read(ObjectKind::Index, &id(3), u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!("S3 bucket `{BUCKET}`: reading index {}", id(3)))
            && message.contains("cannot reach"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}

#[test]
fn the_conditional_put_is_probed_before_a_config_is_created() {
    let server = S3Server::start();
    let backend = backend(&server, &format!("s3://{BUCKET}/probed"));
    assert_eq!(
        backend.probe_conditional_put().unwrap(),
        ConditionalPut::Honoured,
        "moto honours If-None-Match: *"
    );
    // The probe leaves no object a reader would see.
    for kind in [ObjectKind::Config, ObjectKind::Index, ObjectKind::Key] {
        assert!(backend.list(kind).unwrap().is_empty(), "{kind:?}");
    }
    assert_eq!(
        backend
            .create(ObjectKind::Config, "config", b"one")
            .unwrap(),
        Created::New
    );
    assert_eq!(
        backend
            .create(ObjectKind::Config, "config", b"two")
            .unwrap(),
        Created::AlreadyExisted
    );
}

#[test]
fn without_conditional_puts_a_create_still_keeps_what_exists() {
    // The fallback of a service that lacks (or ignores) conditional puts:
    // a HEAD, then a plain PUT only if the key is absent.
    let server = S3Server::start();
    let backend = backend(&server, &format!("s3://{BUCKET}/fallback")).without_conditional_put();
    let name = "cd".repeat(32);
    for kind in [ObjectKind::Index, ObjectKind::Config] {
        let name = if kind == ObjectKind::Config {
            "config"
        } else {
            &name
        };
        assert_eq!(backend.create(kind, name, b"first").unwrap(), Created::New);
        assert_eq!(
            backend.create(kind, name, b"second").unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(backend.read(kind, name, 1024).unwrap(), b"first");
    }
}

#[test]
fn a_silent_server_fails_reads_after_the_read_timeout() {
    // The link goes silent (the relay keeps connections open, carries
    // nothing), mid-answer or before it: a read, a ranged read and a raw
    // call (versioning) each give up after the location's read_timeout,
    // naming what they read and the silence, instead of waiting out the
    // 300 s request limit.
    let server = S3Server::start();
    let relay = Relay::to(&server.endpoint);
    let backend = backend(
        &server,
        &format!(
            "s3://{BUCKET}/silent?endpoint={}&retries=1&read_timeout=1",
            relay.endpoint
        ),
    );
    let name = "ef".repeat(32);
    backend.create(ObjectKind::Pack, &name, b"packed").unwrap();
    // Mid-answer: a body that stops after 1 MiB of 4 (the client resumes
    // it from where it stopped, into the same silence).
    let large = "fe".repeat(32);
    let bytes: Vec<u8> = (0..4u32 << 20).map(|index| (index % 251) as u8).collect();
    backend.create(ObjectKind::Pack, &large, &bytes).unwrap();
    let started = Instant::now();
    relay.stall_after(1 << 20);
    let error = backend
        .read(ObjectKind::Pack, &large, 8 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("reading pack {large}"))
            && error.contains("nothing came for 1 s (read_timeout)"),
        "{error}"
    );
    relay.stall();
    for error in [
        backend.read(ObjectKind::Pack, &name, 1024).unwrap_err(),
        backend
            .read_range(ObjectKind::Pack, &name, 1, 3)
            .unwrap_err(),
    ] {
        let error = error.to_string();
        assert!(
            error.contains(&format!("reading pack {name}"))
                && error.contains("nothing came for 1 s (read_timeout)")
                && error.contains("after 2 attempts"),
            "{error}"
        );
    }
    let error = backend.versioning_enabled().unwrap_err().to_string();
    assert!(
        error.contains("nothing came for 1 s (read_timeout)"),
        "{error}"
    );
    // Two attempts of 1 s for each read and one for the raw call, with
    // backoff; not minutes.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
}
