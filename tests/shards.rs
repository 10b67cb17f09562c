//! One fleet hardened and audited by three CI jobs (`--shard K/3`), their
//! JSON joined by `khard merge`: the same hosts, recap, verdicts and exit
//! code as one run over the whole fleet, against real sshd hosts.

mod common;

use std::collections::BTreeMap;

use common::Fleet;

fn json(run: &common::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()))
}

#[test]
fn three_shards_merged_equal_one_run() {
    let specs: Vec<String> = (1..=2)
        .map(|i| format!("s{i}:server:v1.30.6+k3s1"))
        .chain((1..=7).map(|i| format!("a{i}:agent:v1.30.6+k3s1")))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = Fleet::up(&specs);

    // Check mode first (changes nothing), then the shards apply for real.
    let whole = fleet.apply(&["--check", "--format", "json"]);
    let whole_doc = json(&whole);
    let mut files = Vec::new();
    let mut sizes = Vec::new();
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let run = fleet.apply(&["--check", "--format", "json", "--shard", &shard]);
        let doc = json(&run);
        sizes.push(doc["recap"].as_object().unwrap().len());
        let f = fleet.dir.join(format!("check-{k}.json"));
        std::fs::write(&f, &run.stdout).unwrap();
        files.push(f);
    }
    assert_eq!(
        sizes.iter().sum::<usize>(),
        9,
        "each host in one shard: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|n| *n >= 1),
        "every shard has hosts here: {sizes:?}"
    );
    let mut args: Vec<&str> = vec!["merge", "--format", "json"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let merged = fleet.khard(&args);
    assert_eq!(merged.code, whole.code, "{}", merged.all());
    let merged_doc = json(&merged);
    assert_eq!(merged_doc["recap"], whole_doc["recap"]);
    assert_eq!(merged_doc["exit_code"], whole_doc["exit_code"]);
    let events = |d: &serde_json::Value| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in d["events"].as_array().unwrap() {
            *m.entry(format!("{} {} {}", e["host"], e["task"], e["status"]))
                .or_default() += 1;
        }
        m
    };
    assert_eq!(events(&merged_doc), events(&whole_doc));
    // The text form: one recap for the whole fleet.
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let text = fleet.khard(&args);
    assert_eq!(text.stdout.matches(" : ok=").count(), 9, "{}", text.all());

    // The compliance report, by shard and whole.
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (whole, whole_doc) = fleet.report(&[]);
    let mut files = Vec::new();
    for k in 1..=3 {
        let (_, doc) = fleet.report(&["--shard", &format!("{k}/3")]);
        let f = fleet.dir.join(format!("report-{k}.json"));
        std::fs::write(&f, doc.to_string()).unwrap();
        files.push(f);
    }
    let junit = fleet.dir.join("merged.xml");
    let mut args: Vec<&str> = vec![
        "merge",
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let merged = fleet.khard(&args);
    assert_eq!(merged.code, whole.code, "{}", merged.all());
    let merged_doc = json(&merged);
    assert_eq!(merged_doc["fleet"], whole_doc["fleet"]);
    let verdicts = |d: &serde_json::Value| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for n in d["nodes"].as_array().unwrap() {
            for c in n["controls"].as_array().unwrap() {
                m.insert(
                    format!("{} {}", n["host"], c["id"]),
                    c["verdict"].to_string(),
                );
            }
        }
        m
    };
    assert_eq!(verdicts(&merged_doc), verdicts(&whole_doc));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 9);
    // A shard given twice is refused, naming the host.
    let again = fleet.khard(&[
        "merge",
        files[0].to_str().unwrap(),
        files[0].to_str().unwrap(),
    ]);
    assert_eq!(again.code, 5, "{}", again.all());
    assert!(again.stderr.contains("is in two shards"), "{}", again.all());
}
