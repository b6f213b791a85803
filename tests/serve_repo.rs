//! The append-only repository server: a real `cairn serve --repo PATH
//! --append-only` on loopback, and clients that use it as `--repo
//! http://…/NAME`. A client backs up, restores and verifies through it; its
//! own credentials cannot delete or replace an object (raw requests signed
//! with its key); a stranger's key, an unsigned request and a replayed one
//! are refused; two clients back up at once; a client killed mid-backup
//! leaves a repository that verifies. The backend conformance suite runs
//! against the server too, with a maintenance key that may delete.

mod common;
#[allow(dead_code)]
#[path = "../store/tests/common/conformance.rs"]
mod conformance;
#[path = "../store/tests/common/faulty_backend.rs"]
mod faulty_backend;

use cairn_store::backend::{Backend, HttpBackend, HttpOptions};
use cairn_store::format::request_auth::{RequestParts, sign_request};
use common::*;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: usize = 1024 * 1024;

/// A `cairn serve` running in the background, killed when dropped.
struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT/NAME`.
    url: String,
    /// Where its stderr (the refusals it logs) goes.
    log: PathBuf,
}

impl Served {
    /// `cairn --repo REPO serve --listen 127.0.0.1:0 ARGS`, with its own
    /// config directory (`server-config` in the workspace) so that it
    /// trusts only what it is told.
    fn start(workspace: &Workspace, repo: &Path, args: &[&str]) -> Served {
        let log = workspace.path(&format!(
            "serve-{}.log",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = workspace
            .command()
            .env("CAIRN_CONFIG_DIR", workspace.path("server-config"))
            .arg("--repo")
            .arg(repo)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cairn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://") || word.starts_with("https://"))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "cairn serve said {line:?}; its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Served { child, url, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// HOST:PORT.
    fn authority(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's one signing key (what `init` made) and its public hex.
fn client_key(workspace: &Workspace) -> (SigningKey, String) {
    let path = std::fs::read_dir(workspace.path("config/keys"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "key"))
        .expect("init made a key");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let secret: [u8; 32] = hex::decode(file["secret_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = SigningKey::from_bytes(&secret);
    let public = hex::encode(key.verifying_key().to_bytes());
    (key, public)
}

/// One raw HTTP/1.1 request's bytes, signed by `key` unless `None`.
fn raw_request(
    served: &Served,
    key: Option<&SigningKey>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Vec<u8> {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let parts = RequestParts {
        method,
        path,
        query,
        body_hash: *blake3::hash(body).as_bytes(),
    };
    // A new nonce for every request this test makes.
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let number = REQUESTS.fetch_add(1, Ordering::SeqCst);
    let nonce: [u8; 16] = blake3::hash(&[time, number].map(u64::to_le_bytes).concat()).as_bytes()
        [..16]
        .try_into()
        .unwrap();
    let target = match query {
        "" => path.to_string(),
        query => format!("{path}?{query}"),
    };
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        served.authority(),
        body.len()
    );
    if let Some(key) = key {
        for (name, value) in sign_request(key, &parts, time, nonce) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw request bytes; the status code.
fn send(served: &Served, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(served.authority()).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

/// Every file under the repository with its bytes' hash.
fn contents(repo: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    walk(repo)
        .into_iter()
        .filter(|path| path.is_file() && !is_temporary(path))
        .map(|path| (path.clone(), file_hash(&path)))
        .collect()
}

fn make_source(root: &Path, seed: u64) {
    write(&root.join("big.bin"), &noise(seed, 3 * MIB));
    write(
        &root.join("notes/readme.md"),
        format!("source {seed}\n").as_bytes(),
    );
    write(&root.join("empty"), b"");
}

/// A workspace whose repository (encrypted, made by `init` here, so this
/// workspace's key is its owner's) is served append-only, trusting that key.
fn served_workspace() -> (Workspace, Served, SigningKey) {
    let workspace = Workspace::new();
    workspace.init();
    let (key, public) = client_key(&workspace);
    let served = Served::start(
        &workspace,
        &workspace.repo(),
        &["--append-only", "--name", "main", "--trusted-key", &public],
    );
    (workspace, served, key)
}

fn through(workspace: &Workspace, served: &Served, args: &[&str]) -> Run {
    let mut all = vec!["--repo", served.url.as_str()];
    all.extend_from_slice(args);
    workspace.cairn(all)
}

#[test]
fn a_client_backs_up_restores_and_verifies_through_the_server() {
    let (workspace, served, _) = served_workspace();
    let source = workspace.path("src");
    make_source(&source, 1);
    let source_arg = source.to_str().unwrap();
    let summary = through(&workspace, &served, &["--json", "backup", source_arg])
        .ok()
        .json();
    let snapshot = summary["snapshot"].as_str().unwrap();
    // The second backup deduplicates against the first, through the index
    // it lists and reads over HTTP.
    let second = through(&workspace, &served, &["--json", "backup", source_arg])
        .ok()
        .json();
    assert_eq!(second["new_chunks"], 0, "{second:#}");

    let target = workspace.path("restored");
    through(
        &workspace,
        &served,
        &["restore", snapshot, "--target", target.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&source, &target.join("src"));
    let report = through(&workspace, &served, &["--json", "verify", "--read-data"])
        .ok()
        .json();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["snapshots"], 2);
}

#[test]
fn the_clients_own_key_cannot_delete_or_replace_and_strangers_and_replays_are_refused() {
    let (workspace, served, key) = served_workspace();
    let source = workspace.path("src");
    make_source(&source, 2);
    let summary = through(
        &workspace,
        &served,
        &["--json", "backup", source.to_str().unwrap()],
    )
    .ok()
    .json();
    let snapshot = summary["snapshot"].as_str().unwrap().to_string();
    let before = contents(&workspace.repo());
    let pack = workspace.packs()[0].clone();
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    let pack_path = format!("/main/data/{pack_name}");

    // The client's own key reads, but cannot delete nor replace.
    let read = raw_request(
        &served,
        Some(&key),
        "GET",
        &pack_path,
        "limit=1000000000",
        b"",
    );
    assert_eq!(send(&served, &read), 200);
    let delete = raw_request(&served, Some(&key), "DELETE", &pack_path, "", b"");
    assert_eq!(send(&served, &delete), 403);
    let replace = raw_request(&served, Some(&key), "PUT", &pack_path, "", b"other bytes");
    assert_eq!(send(&served, &replace), 409);
    // The same request again, word for word: a replay.
    assert_eq!(send(&served, &read), 401);
    // A key the server does not trust, and no signature at all.
    let stranger = SigningKey::from_bytes(&[42; 32]);
    let foreign = raw_request(
        &served,
        Some(&stranger),
        "GET",
        &pack_path,
        "limit=1000000000",
        b"",
    );
    assert_eq!(send(&served, &foreign), 401);
    let unsigned = raw_request(&served, None, "DELETE", &pack_path, "", b"");
    assert_eq!(send(&served, &unsigned), 401);
    // A signed header set with another body: the body is bound.
    let mut swapped = raw_request(&served, Some(&key), "PUT", "/main/data/00ff", "", b"aaaa");
    let length = swapped.len();
    swapped[length - 4..].copy_from_slice(b"bbbb");
    assert_eq!(send(&served, &swapped), 400);

    // Through the backend, a delete is an error naming the object.
    let client = HttpBackend::open(&served.url, key.clone(), &HttpOptions::default()).unwrap();
    let refused = client
        .delete(cairn_store::backend::ObjectKind::Pack, pack_name)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(pack_name) && refused.contains("append-only"),
        "{refused}"
    );
    // So are a forget (which deletes the manifest it forgets) and a prune:
    // each fails, naming the refusal.
    for args in [
        vec!["forget", snapshot.as_str()],
        vec!["prune", "--grace", "0s", "--max-unused", "0%"],
    ] {
        let run = through(&workspace, &served, &args);
        assert!(
            run.code == 1 && run.stderr.contains("append-only"),
            "{args:?}: {}: {}",
            run.code,
            run.stderr
        );
    }

    // Nothing that was there has gone or changed.
    let after = contents(&workspace.repo());
    for (path, hash) in &before {
        assert_eq!(after.get(path), Some(hash), "{} changed", path.display());
    }
    let log = served.log();
    assert!(
        log.contains("append-only") && log.contains("replay"),
        "{log}"
    );
}

#[test]
fn two_clients_back_up_at_once() {
    let (workspace, served, _) = served_workspace();
    let shared = noise(99, 4 * MIB);
    let sources: Vec<PathBuf> = (0..2)
        .map(|index| {
            let source = workspace.path(&format!("source{index}"));
            write(&source.join("shared.bin"), &shared);
            make_source(&source, index + 10);
            source
        })
        .collect();
    let children: Vec<Child> = sources
        .iter()
        .enumerate()
        .map(|(index, source)| {
            workspace
                .command()
                .args(["--repo", &served.url, "--json", "backup", "--component"])
                .arg(format!("part{index}={}", source.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let snapshots: Vec<String> = children
        .into_iter()
        .map(|child| {
            let run = run_of(child.wait_with_output().unwrap()).ok();
            run.json()["snapshot"].as_str().unwrap().to_string()
        })
        .collect();
    let report = through(&workspace, &served, &["--json", "verify", "--read-data"])
        .ok()
        .json();
    assert_eq!(report["clean"], true, "{report:#}");
    for (index, snapshot) in snapshots.iter().enumerate() {
        let target = workspace.path(&format!("restored{index}"));
        through(
            &workspace,
            &served,
            &["restore", snapshot, "--target", target.to_str().unwrap()],
        )
        .ok();
        assert_same_tree(&sources[index], &target.join(format!("part{index}")));
    }
}

#[test]
fn a_client_killed_mid_backup_leaves_a_repository_that_verifies() {
    let (workspace, served, _) = served_workspace();
    let source = workspace.path("src");
    // Several packs' worth, so that the first pack stored comes well
    // before the end.
    for index in 0..8 {
        write(&source.join(format!("{index}.bin")), &noise(index, 6 * MIB));
    }
    let mut child = workspace
        .command()
        .args(["--repo", &served.url, "backup"])
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as the server has stored its first pack.
    let deadline = Instant::now() + Duration::from_secs(120);
    while workspace.packs().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(kill(&mut child), "the backup ended before it was killed");
    let verified = through(&workspace, &served, &["--json", "verify"]);
    assert_eq!(verified.code, 0, "{}", verified.stdout);
    assert_objects_named_by_their_hash(&workspace.repo());
    let snapshot = through(
        &workspace,
        &served,
        &["--json", "backup", source.to_str().unwrap()],
    )
    .ok()
    .json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = workspace.path("restored");
    through(
        &workspace,
        &served,
        &["restore", &snapshot, "--target", target.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&source, &target.join("src"));
}

/// `openssl` makes a certificate authority and a certificate it signs
/// for 127.0.0.1, in `directory`: `ca.pem`, `server.pem`, `server.key`.
fn make_certificates(directory: &Path) {
    std::fs::create_dir_all(directory).unwrap();
    let script = "set -e
        P256='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
        openssl req -x509 $P256 -keyout ca.key -out ca.pem -days 2 -subj '/CN=cairn test authority'
        openssl req $P256 -keyout server.key -out server.csr -subj /CN=127.0.0.1
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \\
            -out server.pem -days 2 -extfile server.ext";
    let output = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(directory)
        .output()
        .expect("sh");
    assert!(
        output.status.success(),
        "making certificates with openssl (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn https_with_a_certificate_of_the_servers_own_authority() {
    let workspace = Workspace::new();
    workspace.init();
    let (_, public) = client_key(&workspace);
    let tls = workspace.path("tls");
    make_certificates(&tls);
    let certificate = tls.join("server.pem");
    let key = tls.join("server.key");
    let served = Served::start(
        &workspace,
        &workspace.repo(),
        &[
            "--append-only",
            "--trusted-key",
            &public,
            "--tls-cert",
            certificate.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(served.url.starts_with("https://"), "{}", served.url);
    // Without the authority the client refuses the server's certificate.
    let refused = through(&workspace, &served, &["snapshots"]);
    assert!(
        refused.code == 1 && refused.stderr.contains("certificate"),
        "{}: {}",
        refused.code,
        refused.stderr
    );
    let source = workspace.path("src");
    make_source(&source, 3);
    let mut backup = workspace.command();
    backup
        .env("CAIRN_SERVER_CA_FILE", tls.join("ca.pem"))
        .args(["--repo", &served.url, "--json", "backup"])
        .arg(&source);
    let summary = run_of(backup.output().unwrap()).ok().json();
    let snapshot = summary["snapshot"].as_str().unwrap();
    let target = workspace.path("restored");
    let mut restore = workspace.command();
    restore
        .env("CAIRN_SERVER_CA_FILE", tls.join("ca.pem"))
        .args(["--repo", &served.url, "restore", snapshot, "--target"])
        .arg(&target);
    run_of(restore.output().unwrap()).ok();
    assert_same_tree(&source, &target.join("src"));
}

/// The backend conformance suite, against a server whose repository
/// directory starts empty, through a client whose key is the server's
/// maintenance key (the suite deletes).
struct Fixture {
    backend: Arc<dyn Backend>,
    served: Served,
    _workspace: Workspace,
}

fn conformance_fixture() -> Fixture {
    let workspace = Workspace::new();
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let served = Served::start(
        &workspace,
        &workspace.path("conformance"),
        &["--append-only", "--allow-prune-key", &public],
    );
    let backend = Arc::new(HttpBackend::open(&served.url, key, &HttpOptions::default()).unwrap());
    Fixture {
        backend,
        served,
        _workspace: workspace,
    }
}

macro_rules! conformance_tests {
    ($($check:ident $(, $argument:expr)*;)*) => {
        mod conformance_over_http {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let fixture = conformance_fixture();
                    conformance::$check(&fixture.backend $(, $argument)*);
                }
            )*

            #[test]
            fn location_says_where() {
                let fixture = conformance_fixture();
                conformance::location_says_where(&fixture.backend, &fixture.served.url);
            }
        }
    };
}

conformance_tests! {
    removing_stale_temporaries_keeps_objects;
    create_is_create_if_absent;
    racing_writers_one_wins_whole, 12;
    whole_and_ranged_reads;
    missing_objects_are_missing;
    listing_per_kind_with_sizes_and_times;
    listing_while_deleting, conformance::Scale { listed_objects: 300 };
    delete_of_missing_is_not_an_error;
    invalid_names_are_refused;
    injected_write_failures;
    injected_read_failures;
    readers_never_see_partial_objects, 3;
}

/// The link to a server goes silent (a relay keeps every connection open
/// and carries nothing): a read through it is given up after the client's
/// idle-read timeout, each of its attempts, and fails naming the object
/// and the silence, well before the 300 s a whole request may take.
#[test]
fn a_read_from_a_silent_server_is_given_up_after_the_read_timeout() {
    let workspace = Workspace::new();
    let key = SigningKey::from_bytes(&[9; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let served = Served::start(
        &workspace,
        &workspace.path("silent"),
        &["--append-only", "--allow-prune-key", &public],
    );
    let relay = common::s3::Relay::to(&format!("http://{}", served.authority()));
    let name = served.url.rsplit('/').next().unwrap();
    let options = HttpOptions {
        read_timeout: Some(Duration::from_secs(1)),
        ..HttpOptions::default()
    };
    let backend = HttpBackend::open(&format!("{}/{name}", relay.endpoint), key, &options).unwrap();
    let pack = "ab".repeat(32);
    backend
        .create(cairn_store::backend::ObjectKind::Pack, &pack, b"packed")
        .unwrap();
    relay.stall();
    let started = Instant::now();
    let error = backend
        .read_range(cairn_store::backend::ObjectKind::Pack, &pack, 0, 6)
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(
        error.contains(&pack)
            && error.contains("nothing came for 1 s")
            && error.contains("the server went silent"),
        "{error}"
    );
    // Six attempts of 1 s and the backoff between them (6.3 s); not 300 s.
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
}
