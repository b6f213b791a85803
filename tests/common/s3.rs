//! [`S3Server`]: a real S3-compatible server (moto's) on a free loopback
//! port for one test, with a bucket made, killed when dropped. Also the few
//! raw bucket operations tests need behind cairn's back (overwriting an
//! object to damage it, listing keys), done with boto3 from the same venv.
//!
//! Shared by the store's backend tests and the CLI's end-to-end tests, so it
//! uses nothing but std. The venv comes from `scripts/s3-server.sh` (which
//! `scripts/test.sh` runs); a missing one fails the test, loudly.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fake credentials: moto accepts any, and nothing from outside is used.
pub const ACCESS_KEY: &str = "cairn-test-access-key";
pub const SECRET_KEY: &str = "cairn-test-secret-key";
pub const REGION: &str = "us-east-1";
/// The bucket every server starts with.
pub const BUCKET: &str = "cairn-test";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    venv: PathBuf,
}

/// The venv `scripts/s3-server.sh` made: `CAIRN_S3_VENV`, or target/s3-venv
/// beside the workspace.
pub fn venv() -> PathBuf {
    match std::env::var_os("CAIRN_S3_VENV") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/s3-venv"),
    }
}

/// The environment a process needs to reach a test server.
pub fn environment(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("CAIRN_S3_ENDPOINT", endpoint.into()),
    ]
}

/// Raw bucket operations through boto3: `OP BUCKET [KEY|PREFIX] [FILE]`.
const TOOL: &str = r#"
import sys, boto3
op, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=sys.argv[-1])
if op == "create-bucket":
    s3.create_bucket(Bucket=bucket)
elif op == "create-bucket-in":
    boto3.client("s3", endpoint_url=sys.argv[-1], region_name=sys.argv[3]).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": sys.argv[3]})
elif op == "put":
    with open(sys.argv[4], "rb") as f:
        s3.put_object(Bucket=bucket, Key=sys.argv[3], Body=f.read())
elif op == "get":
    with open(sys.argv[4], "wb") as f:
        f.write(s3.get_object(Bucket=bucket, Key=sys.argv[3])["Body"].read())
elif op == "delete":
    s3.delete_object(Bucket=bucket, Key=sys.argv[3])
elif op == "download":
    import os
    prefix, target = sys.argv[3], sys.argv[4]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            path = os.path.join(target, item["Key"][len(prefix):].lstrip("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
elif op == "list":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[3]):
        for item in page.get("Contents", []):
            print(item["Key"], item["Size"])
"#;

impl S3Server {
    /// Starts moto on a free loopback port and makes [`BUCKET`].
    pub fn start() -> S3Server {
        Self::start_all(&[REGION]).pop().expect("one server")
    }

    /// Starts one moto per region, all at once (each takes seconds to
    /// come up), each with [`BUCKET`] made in its region: independent
    /// servers standing for services in different regions.
    pub fn start_all(regions: &[&str]) -> Vec<S3Server> {
        let venv = venv();
        let program = venv.join("bin/moto_server");
        assert!(
            program.exists(),
            "{} is missing: run `bash scripts/s3-server.sh` (scripts/test.sh does) \
             to install the S3 test server, or set CAIRN_S3_VENV",
            program.display()
        );
        let mut servers: Vec<(S3Server, u16)> = regions
            .iter()
            .map(|_| {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("find a free loopback port")
                    .port();
                let child = Command::new(&program)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|error| panic!("start {}: {error}", program.display()));
                let server = S3Server {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    venv: venv.clone(),
                };
                (server, port)
            })
            .collect();
        for ((server, port), region) in servers.iter_mut().zip(regions) {
            server.wait_until_ready(*port);
            if *region == REGION {
                server.create_bucket(BUCKET);
            } else {
                server.tool(&["create-bucket-in", BUCKET, region]);
            }
        }
        servers.into_iter().map(|(server, _)| server).collect()
    }

    fn wait_until_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the S3 test server exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "the S3 test server did not start listening within a minute"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The environment for a process that talks to this server.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        environment(&self.endpoint)
    }

    /// Sets this server's environment on `command`.
    pub fn configure(&self, command: &mut Command) {
        for (name, value) in self.environment() {
            command.env(name, value);
        }
    }

    /// Runs the boto3 tool and returns its stdout.
    fn tool(&self, args: &[&str]) -> String {
        let mut command = Command::new(self.venv.join("bin/python"));
        command.arg("-c").arg(TOOL).args(args).arg(&self.endpoint);
        self.configure(&mut command);
        let output = command.output().expect("run python for S3");
        assert!(
            output.status.success(),
            "S3 tool {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.tool(&["create-bucket", bucket]);
    }

    /// Writes `bytes` under `key`, replacing what is there (as damage
    /// would: cairn itself never overwrites).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let file = tempfile_path();
        std::fs::write(&file, bytes).expect("write object file");
        self.tool(&["put", BUCKET, key, file.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&file);
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let file = tempfile_path();
        self.tool(&["get", BUCKET, key, file.to_str().expect("utf-8 path")]);
        let bytes = std::fs::read(&file).expect("read object file");
        let _ = std::fs::remove_file(&file);
        bytes
    }

    pub fn delete(&self, key: &str) {
        self.tool(&["delete", BUCKET, key]);
    }

    /// Copies every object under `prefix` into `target`, keys becoming
    /// paths, so the local test helpers can inspect an S3 repository.
    pub fn download(&self, prefix: &str, target: &std::path::Path) {
        std::fs::create_dir_all(target).expect("create download directory");
        self.tool(&[
            "download",
            BUCKET,
            prefix,
            target.to_str().expect("utf-8 path"),
        ]);
    }

    /// Keys under `prefix` with their sizes, sorted.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut keys: Vec<(String, u64)> = self
            .tool(&["list", BUCKET, prefix])
            .lines()
            .filter_map(|line| {
                let (key, size) = line.rsplit_once(' ')?;
                Some((key.to_string(), size.parse().ok()?))
            })
            .collect();
        keys.sort();
        keys
    }
}

/// A TCP relay on a free loopback port to a server, that a test can cut,
/// stall and restore: cut, it closes every connection it carries and every
/// new one at once, as a service that went down would; stalled, it keeps
/// every connection open, old and new, and forwards nothing either way, as
/// a half-dead link or a hung server would. Lets a test take a server away
/// mid-run and bring it back with its objects (moto keeps them only in
/// memory, so stopping moto itself would lose them).
pub struct Relay {
    pub endpoint: String,
    /// [`UP`], [`CUT`] or [`STALLED`].
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    /// Bumped on every cut: connections opened before it end.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes carried, both ways.
    carried: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set by [`Relay::silence`]: a request that carries these bytes is
    /// held back, and its connection goes silent.
    trigger: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    /// Set by [`Relay::stall_after`]: the relay stalls once it has carried
    /// this many bytes in all.
    limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Requests held back so.
    silenced: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const UP: u8 = 0;
const CUT: u8 = 1;
const STALLED: u8 = 2;

impl Relay {
    pub fn to(target: &str) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
        let target = target
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let mode = Arc::new(AtomicU8::new(UP));
        let generation = Arc::new(AtomicU64::new(0));
        let carried = Arc::new(AtomicU64::new(0));
        let trigger = Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let limit = Arc::new(AtomicU64::new(u64::MAX));
        let silenced = Arc::new(AtomicU64::new(0));
        let (thread_mode, thread_generation) = (mode.clone(), generation.clone());
        let (thread_carried, thread_trigger) = (carried.clone(), trigger.clone());
        let (thread_limit, thread_silenced) = (limit.clone(), silenced.clone());
        std::thread::spawn(move || {
            // Connections made while stalled: held open, never answered.
            let mut held = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                match thread_mode.load(Ordering::SeqCst) {
                    CUT => continue, // dropped: the connection closes at once
                    STALLED => {
                        held.push(client);
                        continue;
                    }
                    _ => {}
                }
                // Connected on a thread of its own: a server slow to
                // accept must not hold the connections behind this one
                // unanswered (a stall the test did not ask for).
                let born = thread_generation.load(Ordering::SeqCst);
                let (thread_mode, thread_generation) =
                    (thread_mode.clone(), thread_generation.clone());
                let (thread_carried, thread_trigger, thread_limit) = (
                    thread_carried.clone(),
                    thread_trigger.clone(),
                    thread_limit.clone(),
                );
                let thread_silenced = thread_silenced.clone();
                let target = target.clone();
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(&target) else {
                        return;
                    };
                    // Set once this connection carried a silenced request:
                    // it forwards nothing more, either way.
                    let muted = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    for (from, to, requests) in [
                        (client.try_clone(), server.try_clone(), true),
                        (server.try_clone(), client.try_clone(), false),
                    ] {
                        let (Ok(from), Ok(to)) = (from, to) else {
                            continue;
                        };
                        let mode = thread_mode.clone();
                        let generation = thread_generation.clone();
                        let carried = thread_carried.clone();
                        let trigger = thread_trigger.clone();
                        let limit = thread_limit.clone();
                        let (muted, silenced) = (muted.clone(), thread_silenced.clone());
                        std::thread::spawn(move || {
                            let live = || generation.load(Ordering::SeqCst) == born;
                            let stalled = |chunk: &[u8]| {
                                if requests
                                    && !muted.load(Ordering::SeqCst)
                                    && let Some(needle) = trigger.lock().unwrap().as_deref()
                                    && !needle.is_empty()
                                    && chunk.windows(needle.len()).any(|part| part == needle)
                                {
                                    muted.store(true, Ordering::SeqCst);
                                    silenced.fetch_add(1, Ordering::SeqCst);
                                }
                                if carried.load(Ordering::SeqCst) >= limit.load(Ordering::SeqCst) {
                                    mode.store(STALLED, Ordering::SeqCst);
                                }
                                mode.load(Ordering::SeqCst) == STALLED
                                    || muted.load(Ordering::SeqCst)
                            };
                            forward(from, to, &live, &stalled, &carried);
                        });
                    }
                });
            }
        });
        Relay {
            endpoint: format!("http://127.0.0.1:{port}"),
            mode,
            generation,
            carried,
            trigger,
            limit,
            silenced,
        }
    }

    /// Bytes carried so far, both ways.
    pub fn carried(&self) -> u64 {
        self.carried.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server goes away: open connections close, new ones are refused.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.mode.store(CUT, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The link goes silent: open connections stay open and new ones are
    /// accepted, but not a byte more is carried either way.
    pub fn stall(&self) {
        self.mode
            .store(STALLED, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request that carries `needle` (e.g. a pack's key) is held
    /// back unanswered, and its connection goes silent; other requests
    /// are answered: a server that hangs on one object, however fast the
    /// run that asks for it goes.
    pub fn silence(&self, needle: &str) {
        *self.trigger.lock().unwrap() = Some(needle.as_bytes().to_vec());
    }

    /// Requests held back by [`Relay::silence`] so far.
    pub fn silenced(&self) -> u64 {
        self.silenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The link goes silent (as [`Relay::stall`]) once `more` bytes have
    /// been carried from now on: mid-answer, for a large one.
    pub fn stall_after(&self, more: u64) {
        use std::sync::atomic::Ordering;
        self.limit.store(self.carried() + more, Ordering::SeqCst);
    }

    /// The server is back (stalled connections carry on).
    pub fn restore(&self) {
        self.mode.store(UP, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Carries bytes `from` one side `to` the other while `live()`, and none
/// while `stalled(bytes about to go, or none)`; then closes both. Every
/// wait is short (50 ms), a write's too: a blocked write to a peer that
/// reads slowly must not keep a cut connection open.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    live: &dyn Fn() -> bool,
    stalled: &dyn Fn(&[u8]) -> bool,
    carried: &std::sync::atomic::AtomicU64,
) {
    use std::io::{ErrorKind, Read, Write};
    let waiting = |error: &std::io::Error| {
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    };
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = to.set_write_timeout(Some(Duration::from_millis(50)));
    let mut buffer = vec![0u8; 64 * 1024];
    'carrying: while live() {
        if stalled(&[]) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let count = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if waiting(&error) => continue,
            Err(_) => break,
        };
        carried.fetch_add(count as u64, std::sync::atomic::Ordering::SeqCst);
        let mut rest = &buffer[..count];
        while !rest.is_empty() {
            if !live() {
                break 'carrying;
            }
            if stalled(rest) {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match to.write(rest) {
                Ok(0) => break 'carrying,
                Ok(written) => rest = &rest[written..],
                Err(error) if waiting(&error) => {}
                Err(_) => break 'carrying,
            }
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn tempfile_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "cairn-s3-object-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
