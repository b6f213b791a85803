//! `cairn serve --plan`: the real binary serving on loopback, driven by a
//! real HTTP client (reqwest), and its status page loaded by headless
//! Chromium. Each test starts its own server on a port of its own.

mod common;

use common::{Workspace, write};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const OPERATOR: &str = "operator-token-0123456789";
const READER: &str = "reader-token-0123456789";

/// A running `cairn serve`, killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository, a source directory with one file, and a plan over them;
/// `extra` is appended to the plan.
fn setup(workspace: &Workspace, extra: &str) -> PathBuf {
    workspace.init().ok();
    write(&workspace.path("src/a.txt"), b"version one\n");
    let plan = workspace.path("cairn.toml");
    std::fs::write(
        &plan,
        format!(
            "repository = {repo:?}\n\n[[component]]\nname = \"files\"\nkind = \"files\"\npath = {src:?}\n{extra}",
            repo = workspace.repo().display().to_string(),
            src = workspace.path("src").display().to_string(),
        ),
    )
    .unwrap();
    plan
}

/// Starts `cairn serve` for `plan` on a free loopback port.
fn serve(workspace: &Workspace, plan: &Path) -> Served {
    let tokens = workspace.path("tokens");
    // The operator's token is given hashed, as an operator would.
    std::fs::write(
        &tokens,
        format!(
            "read-only:{READER}\noperator:blake3:{}\n",
            blake3::hash(OPERATOR.as_bytes()).to_hex()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(workspace.path("serve.log")).unwrap();
    let mut child = workspace
        .command()
        .args(["serve", "--listen", "127.0.0.1:0", "--plan"])
        .arg(plan)
        .arg("--token-file")
        .arg(&tokens)
        .env_remove("CAIRN_SERVE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "no address on stdout ({line:?}); log: {}",
                std::fs::read_to_string(workspace.path("serve.log")).unwrap_or_default()
            )
        })
        .to_string();
    Served { child, url }
}

fn client() -> Client {
    // reqwest is built without a TLS provider of its own (as cairn's S3
    // client is); a plain-HTTP client still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn post(client: &Client, url: String, token: &str, body: Value) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

fn get(client: &Client, url: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

/// Starts a job and waits for its end; returns the finished job.
fn run_job(client: &Client, served: &Served, path: &str, body: Value) -> Value {
    let (status, started) = post(client, format!("{}{path}", served.url), OPERATOR, body);
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    wait_job(client, served, started["job"].as_str().unwrap())
}

fn wait_job(client: &Client, served: &Served, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, job) = get(client, format!("{}/jobs/{id}", served.url), Some(READER));
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn create_list_restore_with_rollback_tokens_and_metrics() {
    let workspace = Workspace::new();
    let flag = workspace.path("check-fails");
    let plan = setup(
        &workspace,
        &format!("\n[restore]\ncheck = \"test ! -e '{}'\"\n", flag.display()),
    );
    let served = serve(&workspace, &plan);
    let client = client();
    let url = &served.url;

    // Before any backup, health fails and says why; it needs no token.
    let (status, health) = get(&client, format!("{url}/health"), None);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no trusted snapshot")
    );

    // Tokens: none or unknown is 401, a reader may not start work (403).
    let (status, body) = get(&client, format!("{url}/snapshots"), None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, _) = get(
        &client,
        format!("{url}/snapshots"),
        Some("not-a-known-token-000"),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The hash itself is no token.
    let hashed = blake3::hash(OPERATOR.as_bytes()).to_hex().to_string();
    let (status, _) = post(&client, format!("{url}/snapshots"), &hashed, json!({}));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(&client, format!("{url}/snapshots"), READER, json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Bad requests: a JSON error with a code, and no job started.
    let (status, body) = post(
        &client,
        format!("{url}/snapshots"),
        OPERATOR,
        json!({"components": ["nope"]}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown-component");
    let (status, body) = post(
        &client,
        format!("{url}/snapshots"),
        OPERATOR,
        json!({"tagz": []}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad-json");
    let (status, body) = post(
        &client,
        format!("{url}/snapshots/latest/restore"),
        OPERATOR,
        json!({"target": "relative/dir"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad-target");
    let (_, jobs) = get(&client, format!("{url}/jobs"), Some(READER));
    assert_eq!(jobs["jobs"], json!([]));

    // Create: 202 and a job that ends with the snapshot's facts.
    let job = run_job(
        &client,
        &served,
        "/snapshots",
        json!({"tags": ["pre-migration"], "labels": {"ticket": "OPS-1"}}),
    );
    assert_eq!(job["status"], "completed", "{job}");
    let result = &job["result"];
    let id = result["snapshot"].as_str().unwrap().to_string();
    assert_eq!(result["manifest_hash"], id.as_str());
    assert_eq!(result["verdict"], "complete");
    assert_eq!(result["components"][0]["name"], "files");
    assert_eq!(result["problems"], json!([]));
    // The command line sees it.
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["snapshots"][0]["id"], id.as_str());
    assert_eq!(listed["snapshots"][0]["tags"], json!(["pre-migration"]));

    // List, with and without a filter, and one snapshot's files.
    let (status, listed) = get(&client, format!("{url}/snapshots"), Some(READER));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["snapshots"][0]["id"], id.as_str());
    assert_eq!(listed["snapshots"][0]["labels"]["ticket"], "OPS-1");
    let (_, filtered) = get(&client, format!("{url}/snapshots?tag=other"), Some(READER));
    assert_eq!(filtered["snapshots"], json!([]));
    let (status, shown) = get(
        &client,
        format!("{url}/snapshots/{}", &id[..12]),
        Some(READER),
    );
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(
        shown["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["path"] == "files/a.txt"),
        "{shown}"
    );
    let (status, missing) = get(&client, format!("{url}/snapshots/ffffffff"), Some(READER));
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, _) = get(&client, format!("{url}/health"), None);
    assert_eq!(status, StatusCode::OK);

    // Restore into a fresh directory; the plan's check passes.
    let target = workspace.path("restored");
    let job = run_job(
        &client,
        &served,
        &format!("/snapshots/{id}/restore"),
        json!({"target": target}),
    );
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"]["result"], "restored");
    let restored = target.join("files/a.txt");
    assert_eq!(std::fs::read(&restored).unwrap(), b"version one\n");

    // A dry run changes nothing and says what would happen.
    std::fs::write(&restored, b"edited here\n").unwrap();
    let job = run_job(
        &client,
        &served,
        "/snapshots/latest/restore",
        json!({"target": target, "dry_run": true}),
    );
    assert_eq!(job["result"]["result"], "dry-run", "{job}");
    assert_eq!(job["result"]["totals"]["update"], 1, "{job}");
    assert_eq!(std::fs::read(&restored).unwrap(), b"edited here\n");

    // The check fails: the restore is rolled back, the edit is still there.
    std::fs::write(&flag, b"").unwrap();
    let job = run_job(
        &client,
        &served,
        "/snapshots/latest/restore",
        json!({"target": target}),
    );
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["result"]["result"], "rolled-back", "{job}");
    assert_eq!(job["exit_code"], 10);
    assert_eq!(std::fs::read(&restored).unwrap(), b"edited here\n");

    // Metrics need no token and parse as the Prometheus text format.
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let samples = parse_metrics(&text);
    assert_eq!(
        samples[r#"cairn_serve_jobs_total{kind="backup",status="completed"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"cairn_serve_jobs_total{kind="restore",status="failed"}"#],
        1.0
    );
    assert_eq!(samples["cairn_health_ok"], 1.0);
    assert_eq!(samples["cairn_backup_success"], 1.0);
    assert!(samples[r#"cairn_newest_snapshot_timestamp_seconds{component="files"}"#] > 1.7e9);
}

/// Each sample `NAME{LABELS} VALUE`, after checking every line is a
/// comment (`# HELP`/`# TYPE` with a known type) or a sample whose family
/// was typed first.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "gauge" | "counter"), "{line}");
            assert!(typed.insert(name.to_string()), "family {name} typed twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn concurrent_creates_conflict_and_a_killed_server_leaves_a_clean_repository() {
    let workspace = Workspace::new();
    // A component that takes a few seconds: ten MB of noise, slowly.
    let plan = setup(
        &workspace,
        "\n[[component]]\nname = \"slow\"\nkind = \"command\"\ncommand = \"for i in 1 2 3 4 5 6 7 8 9 10; do head -c 1000000 /dev/urandom; sleep 0.4; done\"\n",
    );
    let mut served = serve(&workspace, &plan);
    let client = client();
    let url = served.url.clone();
    let (first, started) = post(&client, format!("{url}/snapshots"), OPERATOR, json!({}));
    let (second, refused) = post(&client, format!("{url}/snapshots"), OPERATOR, json!({}));
    assert_eq!(first, StatusCode::ACCEPTED, "{started}");
    assert_eq!(second, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "busy");
    // A restore is refused while the backup runs.
    let (status, refused) = post(
        &client,
        format!("{url}/snapshots/latest/restore"),
        OPERATOR,
        json!({"target": workspace.path("elsewhere")}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    // Killed mid-backup.
    std::thread::sleep(Duration::from_millis(2000));
    let id = started["job"].as_str().unwrap();
    let (_, job) = get(&client, format!("{url}/jobs/{id}"), Some(READER));
    assert_eq!(
        job["status"], "running",
        "the backup ended before the kill: {job}"
    );
    served.child.kill().unwrap(); // SIGKILL
    served.child.wait().unwrap();

    // What was written before the kill leaves the repository sound.
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["clean"], true, "{report}");
}

#[test]
fn health_turns_503_when_the_newest_snapshot_is_too_old() {
    let workspace = Workspace::new();
    let plan = setup(&workspace, "\n[serve]\nmax_age = \"4s\"\n");
    let served = serve(&workspace, &plan);
    let client = client();
    let job = run_job(&client, &served, "/snapshots", json!({}));
    assert_eq!(job["status"], "completed", "{job}");
    let (status, health) = get(&client, format!("{}/health", served.url), None);
    assert_eq!(status, StatusCode::OK, "{health}");
    std::thread::sleep(Duration::from_secs(5));
    let (status, health) = get(&client, format!("{}/health", served.url), None);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("older than max_age"),
        "{health}"
    );
}

/// The status page in a real browser: headless Chromium loads it from a
/// running server; the DOM shows the components, the chart and health,
/// and a screenshot is taken (kept at CAIRN_SCREENSHOT if set, which is
/// how docs/serve-status.png is made).
#[test]
fn status_page_in_headless_chromium() {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .expect("headless Chromium is needed: apt-get install chromium");
    let workspace = Workspace::new();
    let plan = setup(&workspace, "");
    let served = serve(&workspace, &plan);
    let client = client();
    // Two snapshots, the second bigger: a line with growth.
    assert_eq!(
        run_job(&client, &served, "/snapshots", json!({}))["status"],
        "completed"
    );
    write(&workspace.path("src/b.bin"), &common::noise(7, 300_000));
    assert_eq!(
        run_job(&client, &served, "/snapshots", json!({}))["status"],
        "completed"
    );
    assert_eq!(
        run_job(&client, &served, "/verify", json!({}))["status"],
        "completed"
    );
    assert_eq!(
        run_job(&client, &served, "/drill", json!({}))["status"],
        "completed"
    );

    let page = format!("{}/?token={READER}", served.url);
    let profile = workspace.path("chromium-profile");
    let chromium = |extra: &[String]| {
        let output = std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom".to_string()]);
    assert!(dom.contains("<h1>cairn status</h1>"), "{dom}");
    assert!(dom.contains(r#"<td class="component">files</td>"#), "{dom}");
    assert!(dom.contains(r#"id="size-chart""#), "{dom}");
    assert_eq!(dom.matches("<circle").count(), 2, "{dom}");
    assert!(dom.contains(r#"data-component="files""#), "{dom}");
    assert!(dom.contains(r#"<p class="ok">OK</p>"#), "{dom}");
    assert!(dom.contains(r#"<table id="verify-history">"#), "{dom}");
    assert!(dom.contains(r#"<table id="drill-history">"#), "{dom}");
    // Without a token the page is refused.
    let (status, _) = get(&client, format!("{}/", served.url), None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let shot = workspace.path("status.png");
    chromium(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1000,1300".to_string(),
        "--hide-scrollbars".to_string(),
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("CAIRN_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn openapi_document_parses_and_names_every_route() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/snapshots", "get"),
        ("/snapshots", "post"),
        ("/snapshots/{id}", "get"),
        ("/snapshots/{id}/restore", "post"),
        ("/verify", "post"),
        ("/drill", "post"),
        ("/jobs", "get"),
        ("/jobs/{id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in docs/openapi.json"
        );
    }
}
