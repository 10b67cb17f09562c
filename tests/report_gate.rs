//! `khard report` as a CI gate: hardened nodes of each era (PodSecurityPolicy,
//! Pod Security Admission, its 1.29+ additions, an agent) pass the default
//! gate, and the strict `--fail-on warn` gate with the exceptions the README
//! lists (docs/exceptions.example.yaml); an expired exception fails again;
//! JUnit has one testcase per control and node.

mod common;

use common::{Fleet, node};

const HOSTS: [&str; 4] = ["psp", "psa", "psa129", "agent"];

/// The README's example with every `expires:` moved to `expires`.
fn exceptions_expiring(fleet: &Fleet, expires: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/exceptions.example.yaml"),
    )
    .unwrap();
    let text: String = example
        .lines()
        .map(|l| match l.split_once("expires: ") {
            Some((indent, _)) => format!("{indent}expires: {expires}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = fleet.dir.join(format!("exceptions-{expires}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn count(doc: &serde_json::Value, verdict: &str) -> usize {
    HOSTS
        .iter()
        .map(|h| {
            node(doc, h)["controls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["verdict"] == verdict)
                .count()
        })
        .sum()
}

#[test]
fn hardened_nodes_of_each_era_pass_the_gate_with_the_readme_exceptions() {
    let fleet = Fleet::up(&[
        "psp:server:v1.24.17+k3s1",
        "psa:server:v1.27.16+k3s1",
        "psa129:server:v1.33.5+k3s1",
        "agent:agent:v1.33.5+k3s1",
    ]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());

    // The default gate: scored failures only. Nothing scored fails.
    let (run, doc) = fleet.report(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(count(&doc, "fail"), 0);
    let warned = count(&doc, "warn");
    assert!(warned >= 5, "the unscored controls khard leaves: {warned}");

    // The strict gate fails on them …
    let (run, _) = fleet.report(&["--fail-on", "warn"]);
    assert_eq!(run.code, 2, "{}", run.all());

    // … until the README's exceptions accept them, in every format.
    let in_force = exceptions_expiring(&fleet, "2999-12-31");
    let in_force = in_force.to_str().unwrap();
    let junit = fleet.dir.join("report.xml");
    let (run, doc) = fleet.report(&[
        "--fail-on",
        "warn",
        "--exceptions",
        in_force,
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(count(&doc, "warn"), 0);
    assert_eq!(count(&doc, "accepted"), warned);
    let psa = node(&doc, "psa");
    let accepted = psa["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "1.2.11")
        .unwrap();
    assert_eq!(accepted["label"], "ACCEPTED");
    assert!(
        accepted["why"].as_str().unwrap().starts_with(
            "exception accepted by platform-security@example.com until 2999-12-31: AlwaysPullImages"
        ),
        "{accepted}"
    );
    assert_eq!(psa["totals"]["accepted"], 2, "{}", psa["totals"]);

    // JUnit: a testcase per control and node, none failing under this gate.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let controls: usize = HOSTS
        .iter()
        .map(|h| node(&doc, h)["controls"].as_array().unwrap().len())
        .sum();
    assert_eq!(xml.matches("<testcase ").count(), controls);
    assert!(
        xml.contains(&format!("tests=\"{controls}\" failures=\"0\"")),
        "{xml}"
    );
    assert!(xml.contains(
        "name=\"1.2.11 Ensure that the admission control plugin AlwaysPullImages is set (Manual)\""
    ));
    assert!(xml.contains("<skipped message=\"ACCEPTED: exception accepted by"));

    // The text report says it too.
    let text = fleet.run("report", &["--exceptions", in_force, "--limit", "psa"]);
    assert!(
        text.stdout.contains("[ACCEPTED] 1.2.11 "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("   -- 1.2 API Server: "),
        "{}",
        text.stdout
    );

    // Expired yesterday or earlier: the controls fail the strict gate again, and say why.
    let expired = exceptions_expiring(&fleet, "2020-01-31");
    let junit_expired = fleet.dir.join("expired.xml");
    let (run, doc) = fleet.report(&[
        "--fail-on",
        "warn",
        "--exceptions",
        expired.to_str().unwrap(),
        "--junit",
        junit_expired.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert_eq!(count(&doc, "accepted"), 0);
    assert_eq!(count(&doc, "warn"), warned);
    let xml = std::fs::read_to_string(&junit_expired).unwrap();
    assert_eq!(
        xml.matches("<failure type=\"WARN\"").count(),
        warned,
        "{xml}"
    );
    assert!(xml.contains("expired on 2020-01-31"), "{xml}");
}

/// A bad exceptions file is refused with its file and line before any host
/// is contacted; nothing is written.
#[test]
fn a_bad_exceptions_file_names_its_line() {
    let fleet = Fleet::up(&["s1:server:v1.30.6+k3s1"]);
    let bad = fleet.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "- control: \"1.2.9\"\n  reason: r\n  expires: 2027-01-01\n  accepted_by: a\n- control: \"1.2.9\"\n  reason: r\n  expires: soon\n  accepted_by: a\n",
    )
    .unwrap();
    let out = fleet.dir.join("out.json");
    let run = fleet.run(
        "report",
        &[
            "--exceptions",
            bad.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr
            .contains("bad.yaml:5:1: expires: `soon` is not a date"),
        "{}",
        run.all()
    );
    assert!(!out.exists(), "nothing is written");
}
