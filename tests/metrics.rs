//! `--metrics-file`: every command that writes one produces valid
//! Prometheus text exposition format with the figures of the run, and a
//! failed run keeps the time of the last success.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

/// Parses the text format strictly: HELP and TYPE once per family, before
/// its samples, which are contiguous; names and labels well formed; values
/// floats. Returns each sample (`name{labels}` as written) with its value.
fn parse_exposition(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "no final newline");
    let valid_name = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut declared: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad name in {line:?}");
            assert!(
                !declared.contains(&name.to_string()),
                "family {name} declared twice"
            );
            declared.push(name.to_string());
            current = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            assert_eq!(
                Some(name),
                declared.last().map(String::as_str),
                "TYPE without HELP: {line:?}"
            );
            assert_eq!(parts.next(), Some("gauge"), "{line:?}");
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert_eq!(
            Some(name),
            current.as_deref(),
            "sample outside its family: {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|rest| !rest.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            for pair in inner.split("\",") {
                let (key, quoted) = pair.split_once('=').unwrap();
                assert!(valid_name(key), "bad label name in {line:?}");
                assert!(quoted.starts_with('"'), "unquoted label in {line:?}");
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

#[test]
fn backup_verify_prune_and_drill_write_valid_metrics() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("data");
    write(&source.join("a.bin"), &noise(1, 200_000));
    write(&source.join("b.txt"), b"hello\n");
    let metrics = workspace.path("metrics/cairn.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let component = format!("data={}", source.display());
    let with_metrics = |args: &[&str]| {
        let mut all: Vec<std::ffi::OsString> =
            vec!["--metrics-file".into(), metrics.clone().into()];
        all.extend(args.iter().map(Into::into));
        workspace.cairn_repo(all)
    };

    let first = with_metrics(&["--json", "backup", "--component", &component])
        .ok()
        .json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let backup = parse_exposition(&metrics);
    assert_eq!(backup["cairn_backup_success"], 1.0);
    assert_eq!(backup["cairn_backup_files"], 2.0);
    assert_eq!(backup["cairn_backup_bytes_read"], 200_006.0);
    assert_eq!(
        backup["cairn_backup_component_files{component=\"data\"}"],
        2.0
    );
    assert!(backup["cairn_backup_chunks_new"] > 0.0);
    let succeeded_at = backup["cairn_backup_last_success_timestamp_seconds"];
    assert!(succeeded_at > 1.7e9);
    assert_eq!(backup["cairn_backup_complete"], 1.0);
    assert_eq!(backup["cairn_backup_components_failed"], 0.0);

    // A non-critical component fails (the pg dump of issue 27): the
    // snapshot is stored, so success stays 1, but `complete` drops to 0
    // and the count says one failed, which is what an alert watches.
    let run = with_metrics(&[
        "backup",
        "--component",
        &component,
        "--command",
        "pg=exit 1",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let partial = parse_exposition(&metrics);
    assert_eq!(partial["cairn_backup_success"], 1.0);
    assert_eq!(partial["cairn_backup_complete"], 0.0);
    assert_eq!(partial["cairn_backup_components_failed"], 1.0);
    assert_eq!(
        partial["cairn_backup_component_failed{component=\"pg\"}"],
        1.0
    );
    let succeeded_at = partial["cairn_backup_last_success_timestamp_seconds"];

    // A critical failure: success 0, and the last success time is kept.
    let run = with_metrics(&["backup", "--command", "x=exit 1", "--critical", "x"]);
    assert_eq!(run.code, 7);
    let failed = parse_exposition(&metrics);
    assert_eq!(failed["cairn_backup_success"], 0.0);
    assert_eq!(failed["cairn_backup_complete"], 0.0);
    assert_eq!(
        failed["cairn_backup_last_success_timestamp_seconds"],
        succeeded_at
    );
    assert_eq!(
        failed["cairn_backup_component_failed{component=\"x\"}"],
        1.0
    );

    with_metrics(&["verify", "--read-data"]).ok();
    let verify = parse_exposition(&metrics);
    assert_eq!(verify["cairn_verify_healthy"], 1.0);
    assert!(verify["cairn_verify_bytes_read"] > 0.0);

    with_metrics(&["prune", "--dry-run"]).ok();
    let prune = parse_exposition(&metrics);
    assert_eq!(prune["cairn_prune_success"], 1.0);
    assert!(prune["cairn_prune_repository_bytes"] > 0.0);

    let history = workspace.path("drills.jsonl");
    // The latest snapshot is the failed one, which holds nothing.
    with_metrics(&[
        "drill",
        "--snapshot",
        &first,
        "--history",
        history.to_str().unwrap(),
    ])
    .ok();
    let drill = parse_exposition(&metrics);
    assert_eq!(drill["cairn_drill_success"], 1.0);
    assert_eq!(drill["cairn_drill_component_ok{component=\"data\"}"], 1.0);
    assert!(drill["cairn_drill_component_restore_seconds{component=\"data\"}"] >= 0.0);

    // No temporary files are left beside the metrics file.
    let left: Vec<_> = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("cairn.prom")]);
}
