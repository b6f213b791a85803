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
        let venv = venv();
        let program = venv.join("bin/moto_server");
        assert!(
            program.exists(),
            "{} is missing: run `bash scripts/s3-server.sh` (scripts/test.sh does) \
             to install the S3 test server, or set CAIRN_S3_VENV",
            program.display()
        );
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
        let mut server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            venv,
        };
        server.wait_until_ready(port);
        server.create_bucket(BUCKET);
        server
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
