//! `starling serve --config FILE --check` with the real binary: the reference configuration
//! is accepted and printed with its defaults filled in (exit 0); environment overrides show in
//! the output; a bad configuration exits 2 naming the field, the key or the file.
//!
//! `--check` reads no certificate and binds nothing, so the example's absolute paths are used
//! as they are; the files the test writes live in a temporary directory.

use std::path::Path;
use std::process::{Command, Output};

/// The reference configuration shipped in `examples/`.
const EXAMPLE: &str = include_str!("../../examples/starling.toml");

/// Runs `starling serve --config FILE --check` with `vars` added to the environment.
fn check(file: &Path, vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["serve", "--check", "--config"])
        .arg(file)
        .env_remove("RUST_LOG")
        .envs(vars.iter().copied())
        .output()
        .expect("starling runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_passes_and_prints_the_effective_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("starling.toml");
    std::fs::write(&file, EXAMPLE).expect("write config");

    let out = check(&file, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let printed: toml::Table = toml::from_str(&stdout).expect("stdout is TOML");
    assert_eq!(printed["node_id"].as_integer(), Some(1));
    // Derived defaults are written out.
    assert_eq!(
        printed["mqtt"]["client_id"].as_str(),
        Some("starling-node-1")
    );
    assert_eq!(
        printed["tls"]["client_ca"].as_str(),
        Some("/etc/starling/tls/ca.pem")
    );
    assert_eq!(printed["cluster"]["lease"].as_str(), Some("1s"));

    // The printed configuration is itself a valid configuration that prints the same.
    let effective = dir.path().join("effective.toml");
    std::fs::write(&effective, &stdout).expect("write effective config");
    let again = check(&effective, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn environment_overrides_show_in_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("starling.toml");
    std::fs::write(&file, EXAMPLE).expect("write config");
    let out = check(
        &file,
        &[
            ("STARLING_MQTT__BROKER", "10.0.0.5:1883"),
            ("STARLING_MQTT__PASSWORD", "hunter2"),
            ("STARLING_CLUSTER__SHARDS", "1024"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: toml::Table = toml::from_str(&stdout).expect("stdout is TOML");
    assert_eq!(printed["mqtt"]["broker"].as_str(), Some("10.0.0.5:1883"));
    assert_eq!(printed["cluster"]["shards"].as_integer(), Some(1024));
    assert!(
        !stdout.contains("hunter2"),
        "the password is printed:\n{stdout}"
    );
}

#[test]
fn a_bad_config_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (name, config text, env overrides, words the error must contain)
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "lease",
            EXAMPLE.replace("heartbeat = \"200ms\"", "heartbeat = \"600ms\""),
            &[],
            &["cluster.lease (1s)", "cluster.heartbeat"],
        ),
        (
            "advertise",
            EXAMPLE.replace("peer = \"10.0.0.1:7700\"\n", ""),
            &[],
            &["advertise.peer", "listen.peer (0.0.0.0:7700)"],
        ),
        (
            "typo",
            EXAMPLE.replace("max_voters = 3", "max_voter = 3"),
            &[],
            &["unknown field `max_voter`", "line "],
        ),
        (
            "not-in-bootstrap",
            EXAMPLE.to_owned(),
            &[("STARLING_NODE_ID", "4")],
            &["cluster.bootstrap", "node_id 4"],
        ),
        (
            "env-typo",
            EXAMPLE.to_owned(),
            &[("STARLING_MQTT__BROKR", "h:1883")],
            &["STARLING_MQTT__BROKR", "mqtt.brokr"],
        ),
    ];
    for (name, config, vars, needles) in cases {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).expect("write config");
        let out = check(&file, vars);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: printed a config");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{name}: {stderr:?} lacks {needle:?}"
            );
        }
    }
    let missing = dir.path().join("missing.toml");
    let out = check(&missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}
