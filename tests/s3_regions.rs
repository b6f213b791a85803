//! Repositories in several S3 regions, each with its own settings and
//! credentials, as a nightly job uses them: one pass into two independent
//! servers (two moto processes, two regions, two profiles of one shared
//! credentials file); one server gone mid-backup fails only its repository
//! and the next night catches up; the first gone mid-restore and the
//! restore finishes from the second. Also: the EC2 instance role through a
//! stand-in metadata service, secrets never echoed from a location, and a
//! missing bucket named with its region.
//!
//! Each server sits behind a [`Relay`] the test can cut, so a server can go
//! away and come back with its objects.

mod common;
use common::s3::{BUCKET, Relay, S3Server};
use common::*;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const SOME_REPOSITORIES_FAILED: i32 = 8;

/// A `cairn` command that sees no AWS credentials of the process's: every
/// repository must find its own.
fn bare_command(workspace: &Workspace) -> Command {
    let mut command = workspace.command();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "CAIRN_S3_ENDPOINT",
    ] {
        command.env_remove(name);
    }
    command
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            workspace.path("aws/credentials"),
        )
        .env("AWS_CONFIG_FILE", workspace.path("aws/config"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn run(mut command: Command) -> Run {
    run_of(command.output().expect("run cairn"))
}

/// Waits until `done` holds, for at most a minute.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_regions_one_pass_one_server_lost_mid_backup_and_mid_restore() {
    let workspace = Workspace::new();
    let servers = S3Server::start_all(&["us-east-1", "eu-west-1"]);
    let relays: Vec<Relay> = servers
        .iter()
        .map(|server| Relay::to(&server.endpoint))
        .collect();
    // Two profiles with their own keys; the eu one's region comes from
    // the config file, the us one's from the plan.
    write(
        &workspace.path("aws/credentials"),
        b"[us]\naws_access_key_id = US-KEY\naws_secret_access_key = us-secret\n\n\
          [eu]\naws_access_key_id = EU-KEY\naws_secret_access_key = eu-secret\n",
    );
    write(
        &workspace.path("aws/config"),
        b"[profile eu]\nregion = eu-west-1\n",
    );
    let source = workspace.path("source");
    for index in 0..4u64 {
        write(
            &source.join(format!("night1/{index}.bin")),
            &noise(index, 2 * MIB),
        );
    }
    let plan = workspace.path("cairn.toml");
    fs::write(
        &plan,
        format!(
            "[[repository]]\nlocation = \"s3://{BUCKET}/nightly\"\nregion = \"us-east-1\"\n\
             profile = \"us\"\nendpoint = \"{us}\"\nretries = 1\n\n\
             [[repository]]\nlocation = \"s3://{BUCKET}/nightly\"\nprofile = \"eu\"\n\
             endpoint = \"{eu}\"\nstorage_class = \"STANDARD_IA\"\nretries = 1\n\n\
             [[component]]\nname = \"data\"\nkind = \"files\"\npath = \"{}\"\n",
            source.display(),
            us = relays[0].endpoint,
            eu = relays[1].endpoint,
        ),
    )
    .unwrap();
    let location = |index: usize, region: &str, profile: &str| {
        format!(
            "s3://{BUCKET}/nightly?region={region}&profile={profile}&endpoint={}&retries=1",
            relays[index].endpoint
        )
    };
    let us = location(0, "us-east-1", "us");
    let eu = location(1, "eu-west-1", "eu");
    for repo in [&us, &eu] {
        let mut init = bare_command(&workspace);
        init.args(["--repo", repo, "init", "--plaintext"]);
        run(init).ok();
    }
    let backup = |extra: &[&str]| {
        let mut command = bare_command(&workspace);
        command
            .args(["--json", "backup", "--plan"])
            .arg(&plan)
            .args(extra);
        command
    };
    let snapshots = |repo: &str| {
        let mut command = bare_command(&workspace);
        command.args(["--repo", repo, "--json", "snapshots"]);
        run(command).ok().json()["snapshots"]
            .as_array()
            .expect("a list")
            .len()
    };

    // Night 1: one pass into both regions.
    let first = run(backup(&[])).ok().json();
    assert_eq!(
        first["repositories"].as_array().unwrap().len(),
        2,
        "{first}"
    );
    assert_eq!((snapshots(&us), snapshots(&eu)), (1, 1));

    // Night 2: the eu server goes away mid-backup (uploads held to 4 MiB/s
    // so that there is a middle): only that repository fails.
    for index in 0..6u64 {
        write(
            &source.join(format!("night2/{index}.bin")),
            &noise(100 + index, 2 * MIB),
        );
    }
    let child = backup(&["--limit-upload", "4MiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    relays[1].cut();
    let night2 = run_of(child.wait_with_output().unwrap());
    assert_eq!(
        night2.code, SOME_REPOSITORIES_FAILED,
        "{}\n{}",
        night2.stdout, night2.stderr
    );
    let results = night2.json()["repositories"].clone();
    assert_eq!(results[0]["ok"], true, "{results}");
    assert_eq!(results[1]["ok"], false, "{results}");
    let why = results[1]["error"].as_str().unwrap();
    assert!(
        why.contains("cannot reach the S3 service") && why.contains("attempt"),
        "the error says what failed and how often it was tried: {why}"
    );
    relays[1].restore();
    assert_eq!((snapshots(&us), snapshots(&eu)), (2, 1));

    // Night 3: both up again; the eu repository catches up.
    run(backup(&[])).ok();
    assert_eq!((snapshots(&us), snapshots(&eu)), (3, 2));

    // A restore that prefers us loses it mid-way and finishes from eu.
    let target = workspace.path("restored");
    let mut restore = bare_command(&workspace);
    restore
        .args(["--repo", &us, "--repo", &eu, "--limit-download", "2MiB"])
        .args(["--json", "restore", "latest", "--target"])
        .arg(&target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let before = relays[0].carried();
    let child = restore.spawn().unwrap();
    // Cut once 6 MiB of the 20 have come: mid-way through a pack's span.
    wait_for("the restore to download 6 MiB", || {
        relays[0].carried() - before > 6 * MIB as u64
    });
    relays[0].cut();
    let restored = run_of(child.wait_with_output().unwrap());
    assert_eq!(
        restored.code, 0,
        "the restore finishes from eu:\n{}\n{}",
        restored.stdout, restored.stderr
    );
    let report = restored.json();
    let fetched = report["fallbacks"][0]["blobs"].as_u64().unwrap_or(0);
    assert!(fetched > 0, "eu served what us could not: {report}");
    assert_same_tree(&source, &target.join("data"));
}

/// A stand-in for the EC2 instance metadata service (IMDSv2): a session
/// token for a PUT, then the role's name and its credentials for GETs that
/// carry the token. Returns its URL and the requests it answered.
fn metadata_service() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut token = None;
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap_or(("", ""));
                match name.trim().to_ascii_lowercase().as_str() {
                    "x-aws-ec2-metadata-token" => token = Some(value.trim().to_string()),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let request = request_line.trim().to_string();
            let with_token = token.as_deref() == Some("imds-session");
            log.lock()
                .unwrap()
                .push(format!("{request} token={with_token}"));
            let (status, answer) = if request.starts_with("PUT /latest/api/token") {
                ("200 OK", "imds-session".to_string())
            } else if !with_token {
                ("401 Unauthorized", String::new())
            } else if request.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                ("200 OK", "backup-host".to_string())
            } else if request
                .starts_with("GET /latest/meta-data/iam/security-credentials/backup-host ")
            {
                (
                    "200 OK",
                    r#"{"Code":"Success","AccessKeyId":"ROLE-KEY","SecretAccessKey":"role-secret","Token":"role-token","Expiration":"2099-01-01T00:00:00Z"}"#
                        .to_string(),
                )
            } else {
                ("404 Not Found", String::new())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn the_instance_role_signs_when_nothing_else_is_set() {
    let workspace = Workspace::new();
    let server = S3Server::start();
    let (metadata, seen) = metadata_service();
    let repo = format!("s3://{BUCKET}/role?endpoint={}", server.endpoint);
    let mut init = bare_command(&workspace);
    init.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata)
        .args(["--repo", &repo, "init", "--plaintext"]);
    run(init).ok();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|line| line.starts_with("PUT /latest/api/token")),
        "an IMDSv2 session token was asked for: {seen:?}"
    );
    assert!(
        seen.iter().any(|line| line
            .starts_with("GET /latest/meta-data/iam/security-credentials/backup-host")
            && line.ends_with("token=true")),
        "the role's credentials were fetched with the token: {seen:?}"
    );
}

#[test]
fn secrets_in_a_location_are_refused_unechoed_and_settings_do_not_change_the_identity() {
    let workspace = Workspace::new();
    let server = S3Server::start();
    for location in [
        format!("s3://AKIAEXAMPLE:SuperSecret42@{BUCKET}/x"),
        format!("s3://{BUCKET}/x?secret_access_key=SuperSecret42"),
        format!("s3://{BUCKET}/x?access_key_id_env=SuperSecret42/x+y"),
    ] {
        let mut command = workspace.command();
        server.configure(&mut command);
        command.args([
            "--repo",
            &location,
            "--repo",
            &location,
            "backup",
            "/nonexistent",
        ]);
        let refused = run(command);
        assert_ne!(refused.code, 0, "{location} was accepted");
        assert!(
            !refused.stderr.contains("SuperSecret42") && !refused.stdout.contains("SuperSecret42"),
            "the secret is echoed: {}",
            refused.stderr
        );
    }

    // Made under a plain location, used under one with settings: one
    // repository (its pin and cache do not see the query).
    let plain = format!("s3://{BUCKET}/same");
    let mut init = workspace.command();
    server.configure(&mut init);
    init.args(["--repo", &plain, "init", "--plaintext"]);
    run(init).ok();
    let source = workspace.path("source");
    write(&source.join("a.txt"), b"hello");
    let mut backup = workspace.command();
    server.configure(&mut backup);
    backup
        .args([
            "--repo",
            &format!("{plain}?region=us-east-1&path_style=true&retries=2"),
            "backup",
        ])
        .arg(&source);
    run(backup).ok();

    // A bucket that does not exist is named, with the region looked in.
    let mut missing = workspace.command();
    server.configure(&mut missing);
    missing.args([
        "--repo",
        "s3://no-such-bucket/x?region=eu-central-1",
        "snapshots",
    ]);
    let missing = run(missing);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("no-such-bucket")
            && missing.stderr.contains("no such bucket")
            && missing.stderr.contains("eu-central-1"),
        "{}",
        missing.stderr
    );
}

#[test]
fn init_in_a_bucket_of_another_region_names_both_regions_and_makes_nothing() {
    let workspace = Workspace::new();
    let server = S3Server::start_all(&["eu-west-1"])
        .pop()
        .expect("one server");
    let init = |location: &str| {
        let mut command = workspace.command();
        server.configure(&mut command);
        command.args(["--repo", location, "init", "--plaintext"]);
        run(command)
    };
    // The environment signs for us-east-1; the bucket is in eu-west-1.
    let refused = init(&format!("s3://{BUCKET}/wrong"));
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(BUCKET)
            && refused.stderr.contains("eu-west-1")
            && refused.stderr.contains("us-east-1"),
        "{}",
        refused.stderr
    );
    assert!(
        server.list("wrong/").is_empty(),
        "a refused init wrote {:?}",
        server.list("wrong/")
    );
    // The location's own region wins over the environment's.
    init(&format!("s3://{BUCKET}/right?region=eu-west-1")).ok();
    assert!(!server.list("right/").is_empty());
}

/// The preferred repository's link goes silent as the restore reads its
/// first pack (connections stay open, nothing more comes; new ones are
/// accepted and never answered): each read of it is given up after the
/// location's `read_timeout`, not the 300 s a whole request may take; the
/// silent repository is then not asked again, and the restore finishes
/// from the second one, its report naming the silence and the pack.
#[test]
fn a_restore_gives_up_on_a_silent_server_after_its_read_timeout() {
    let workspace = Workspace::new();
    let servers = S3Server::start_all(&["us-east-1", "us-east-1"]);
    let relays: Vec<Relay> = servers
        .iter()
        .map(|server| Relay::to(&server.endpoint))
        .collect();
    let location = |relay: &Relay, settings: &str| {
        format!(
            "s3://{BUCKET}/stall?endpoint={}&retries=0{settings}",
            relay.endpoint
        )
    };
    let silent = location(&relays[0], "&read_timeout=2");
    let second = location(&relays[1], "");
    let command = || {
        let mut command = workspace.command();
        servers[0].configure(&mut command);
        command
    };
    for repo in [&silent, &second] {
        let mut init = command();
        init.args(["--repo", repo, "init", "--plaintext"]);
        run(init).ok();
    }
    // A dozen chunks or so: asking the silent repository for each would
    // cost a read_timeout apiece. And small files enough for two dozen of
    // a restore's batches (512 files each), which each prefetch their
    // chunks: asking the silent repository for each batch would cost a
    // read_timeout apiece.
    let source = workspace.path("source");
    write(&source.join("a.bin"), &noise(200, 256 * 1024));
    for note in 0..12_000 {
        write(
            &source.join(format!("notes/{note:04}.md")),
            &noise(1_000 + note, 600),
        );
    }
    let mut backup = command();
    backup
        .args([
            "--repo",
            &silent,
            "--repo",
            &second,
            "backup",
            "--component",
        ])
        .arg(format!("data={}", source.display()));
    run(backup).ok();
    // Silent for every read of the files' pack (the largest; the other
    // holds the tree).
    let (pack, _) = servers[0]
        .list("stall/data/")
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .expect("packs");
    // Then files only the first repository holds, backed up to it alone,
    // in a pack it still serves: one small (read in a batch) and one large
    // (read in windows). Once the first repository went silent, the
    // restore still asks it for them, last, rather than failing them
    // unasked: a silence may pass, or hold for one object only.
    write(&source.join("zz/only-first.md"), &noise(300, 700));
    write(&source.join("zz/only-first.bin"), &noise(301, 5 * MIB));
    let mut backup = command();
    backup
        .args(["--repo", &silent, "backup", "--component"])
        .arg(format!("data={}", source.display()));
    run(backup).ok();
    relays[0].silence(&format!("GET /{BUCKET}/{pack}"));
    let target = workspace.path("restored");
    let mut restore = command();
    restore
        .args(["--repo", &silent, "--repo", &second, "--json", "restore"])
        .args(["latest", "--target"])
        .arg(&target);
    // To files, not pipes, which nothing reads until it exits: the report
    // of twelve thousand files' restore fills a pipe and holds cairn there.
    let (out, err) = (workspace.path("restore.out"), workspace.path("restore.err"));
    restore
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let started = Instant::now();
    let mut child = restore.spawn().unwrap();
    // Without the idle-read timeout each silent read holds the restore
    // for the whole request's 300 s.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            kill(&mut child);
            panic!("the restore still waited on the silent server after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let restored = run_of(std::process::Output {
        status: child.wait().unwrap(),
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    });
    assert_eq!(
        restored.code, 0,
        "the restore finishes from the second repository:\n{}",
        restored.stderr
    );
    // Not the whole report in a message: it lists twelve thousand files.
    let report = restored.json();
    assert!(
        report["fallbacks"][0]["blobs"].as_u64().unwrap_or(0) > 0,
        "the second repository served what the first did not: {}",
        report["fallbacks"]
    );
    let examples = report["main_failure_examples"].to_string();
    assert!(
        examples.contains("reading pack")
            && examples.contains("nothing came for 2 s (read_timeout)"),
        "the report says which read went silent, and for how long: {examples}"
    );
    // Once silent, the first repository is not asked again for what the
    // second lists: every chunk the second served counts as the first's
    // failure, but only the reads already under way when it was found
    // silent reached the silent pack: the first two batches' prefetches
    // (a few spans each, as the backup laid out their frames) and a chunk
    // on its own per writing thread (8); 17 to 20 here. Each later batch's
    // prefetch asking it again made 54, and cost a read_timeout per batch
    // (22 s in all became 71 s; with the default 30 s timeout, minutes).
    let failures = report["main_failures"].as_u64().unwrap();
    assert!(
        failures >= 12_000,
        "every chunk served elsewhere counts as the first repository's failure: {failures}"
    );
    let silenced = relays[0].silenced();
    assert!(
        silenced <= 32,
        "the silent pack was asked for {silenced} times: more than the reads under way when \
         it went silent"
    );
    assert_same_tree(&source, &target.join("data"));
}
