//! Safe rollout: servers restart one at a time behind a health gate, agents
//! after every server in batches, a server that does not come back stops
//! the rollout, and invalid content is refused before anything is written.

mod common;

use common::Fleet;

const V: &str = "v1.30.6+k3s1";

/// Unix time of the first field of a shim log line.
fn at(line: &str) -> f64 {
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// When the host's restart began (the one restart expected).
fn restart_time(fleet: &Fleet, host: &str) -> f64 {
    let r = fleet.restarts(host);
    assert_eq!(r.len(), 1, "{host} restarts: {r:?}");
    at(&r[0])
}

/// The first health answer "ok" after `t` (readyz for servers, the kubelet healthz for agents).
fn healthy_after(fleet: &Fleet, host: &str, t: f64) -> f64 {
    fleet
        .log(host, "k3s.log")
        .lines()
        .filter(|l| (l.contains("/readyz") || l.contains("10248/healthz")) && l.ends_with("=> ok"))
        .map(at)
        .find(|x| *x > t)
        .unwrap_or_else(|| {
            panic!(
                "{host} never answered ok after its restart:\n{}",
                fleet.log(host, "k3s.log")
            )
        })
}

fn fleet() -> Fleet {
    let specs: Vec<String> = [
        "s1:server",
        "s2:server",
        "s3:server",
        "a1:agent",
        "a2:agent",
        "a3:agent",
    ]
    .iter()
    .map(|s| format!("{s}:{V}"))
    .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    Fleet::up_with(&specs, &["--restart-down", "1.5"])
}

#[test]
fn servers_one_at_a_time_then_agents_in_batches() {
    let fleet = fleet();
    // s2 runs embedded etcd: its gate also waits until it is a voting member again.
    std::fs::create_dir_all(fleet.path("s2", "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let run = fleet.apply(&["--agent-batch", "2", "-e", "k3s_health_interval=0.2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        fleet.log("s2", "k3s.log").contains("EtcdIsVoter"),
        "the etcd voter check did not run on s2"
    );
    assert!(
        !fleet.log("s1", "k3s.log").contains("EtcdIsVoter"),
        "s1 has no embedded etcd"
    );
    // Without a terminal, each wait is a line when it starts and when it ends, in order.
    let at = |line: &str| {
        run.stdout
            .find(line)
            .unwrap_or_else(|| panic!("no `{line}` in:\n{}", run.all()))
    };
    let s2_waits = at("waiting: [s2] handler restart k3s => for batch 2 of 3\n");
    let s1_gate = at("waiting: [s1] handler restart k3s => until healthy\n");
    let s1_healthy = at("waited: [s1] handler restart k3s => healthy after ");
    let s2_starts = at("waited: [s2] handler restart k3s => batch 2 of 3 starts after ");
    assert!(
        s2_waits < s1_gate && s1_gate < s1_healthy && s1_healthy < s2_starts,
        "waits out of order:\n{}",
        run.all()
    );
    let waited = |line: &str| -> u64 {
        let rest = &run.stdout[at(line) + line.len()..];
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        waited("waited: [s1] handler restart k3s => healthy after ") >= 1,
        "k3s is down 1.5 s after a restart: {}",
        run.all()
    );
    assert!(waited("waited: [s3] handler restart k3s => batch 3 of 3 starts after ") >= 3);
    at(
        "waiting: [a1] handler restart k3s-agent => for batch 1 of 2, after handler `restart k3s`\n",
    );
    at("waiting: [a3] handler restart k3s-agent => for batch 2 of 2\n");
    at("waited: [a3] handler restart k3s-agent => healthy after ");
    assert!(!run.stdout.contains("still waiting"), "no wait lasted 30 s");

    let mut last_healthy = 0.0;
    for s in ["s1", "s2", "s3"] {
        let restart = restart_time(&fleet, s);
        assert!(
            restart > last_healthy,
            "{s} restarted at {restart} before the previous server was healthy ({last_healthy})"
        );
        let healthy = healthy_after(&fleet, s, restart);
        assert!(
            healthy - restart >= 1.4,
            "{s} reported healthy while still down"
        );
        last_healthy = healthy;
    }
    let servers_done = last_healthy;
    let mut agents: Vec<(f64, &str)> = ["a1", "a2", "a3"]
        .iter()
        .map(|a| (restart_time(&fleet, a), *a))
        .collect();
    agents.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(
        agents[0].0 > servers_done,
        "an agent restarted before every server was healthy"
    );
    // Batches of two: the first two together, the third after both were healthy again.
    let batch_one_healthy = healthy_after(&fleet, agents[0].1, agents[0].0).max(healthy_after(
        &fleet,
        agents[1].1,
        agents[1].0,
    ));
    assert!(
        agents[1].0 < batch_one_healthy,
        "the first batch should restart together"
    );
    assert!(
        agents[2].0 > batch_one_healthy,
        "the second batch started before the first was healthy"
    );

    // sysctl was live before every restart.
    for host in ["s1", "s2", "s3", "a1", "a2", "a3"] {
        let live = std::fs::metadata(fleet.path(host, "/proc/sys/vm/overcommit_memory"))
            .unwrap()
            .modified()
            .unwrap();
        let live = live
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            live <= restart_time(&fleet, host),
            "{host}: kernel parameters applied after the restart"
        );
    }

    // Nothing changed: nothing restarts.
    let again = fleet.apply(&["-e", "k3s_health_interval=0.2"]);
    assert_eq!(again.code, 0, "{}", again.all());
    for host in ["s1", "s2", "s3", "a1", "a2", "a3"] {
        assert_eq!(
            fleet.restarts(host).len(),
            1,
            "{host} restarted on a run that changed nothing"
        );
    }
}

/// Terminal text without its colour codes (`ESC [ … m`).
fn without_colors(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        match tail.find('m') {
            Some(end) if tail[..end].chars().all(|c| c.is_ascii_digit() || c == ';') => {
                rest = &tail[end + 1..];
            }
            _ => {
                out.push_str("\x1b[");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn a_terminal_shows_each_host_waiting_and_the_bar_moving() {
    let specs: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| format!("{s}:server:{V}"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = Fleet::up_with(&specs, &["--restart-down", "2.5"]);
    let (inv, kh) = (fleet.inventory(), fleet.known_hosts());
    let args = [
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "-e",
        "k3s_health_interval=0.2",
    ];
    let run = fleet.khard_in_pty(&args, None);
    assert_eq!(run.code, 0, "{}", run.all());
    for shown in [
        "handler restart k3s: waiting for batch 2 of 3",
        "handler restart k3s: waiting for batch 3 of 3",
        "handler restart k3s: waiting until healthy (1 s)",
    ] {
        assert!(
            run.stdout.contains(shown),
            "`{shown}` never shown: {:?}",
            run.stdout
        );
    }
    assert!(
        !run.stdout.contains("waiting: [s"),
        "plain wait lines belong to pipes, not terminals"
    );
    // The bar counts outcomes as they come, so it moves while s3 waits for its turn.
    let frames: Vec<&str> = run.stdout.split(" steps").collect();
    let mut positions_while_s3_waits = std::collections::BTreeSet::new();
    for pair in frames.windows(2) {
        let position = pair[0]
            .rsplit("] ")
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        if pair[1].contains("waiting for batch 3 of 3") {
            positions_while_s3_waits.insert(position.to_owned());
        }
    }
    assert!(
        positions_while_s3_waits.len() >= 2,
        "the bar stood still during the rollout: {positions_while_s3_waits:?}"
    );
    // Once s1's restart is done, no later frame says s1 is still waiting
    // (its line goes away), and the bar's ok= counts changed tasks too.
    let plain = without_colors(&run.stdout);
    let done = plain
        .find("changed: [s1] handler restart k3s")
        .unwrap_or_else(|| panic!("s1's restart line: {plain:?}"));
    let later = &plain[done..];
    assert!(
        !later.contains("s1 handler restart k3s: waiting"),
        "s1 still shown waiting after its restart: {later:?}"
    );
    assert!(
        !run.stdout.contains("ok=0 changed=1"),
        "ok= must include changed"
    );
}

#[test]
fn a_server_that_never_comes_back_stops_the_rollout() {
    let fleet = fleet();
    std::fs::write(fleet.host_dir("s2").join("state/never_ready"), "").unwrap();
    let run = fleet.apply(&["-e", "k3s_health_interval=0.2 k3s_health_timeout=3"]);
    assert_eq!(
        run.code,
        3,
        "a failed rollout exits with the failure code: {}",
        run.all()
    );
    assert_eq!(fleet.restarts("s1").len(), 1);
    assert_eq!(
        fleet.restarts("s2").len(),
        1,
        "s2 was restarted (and never came back)"
    );
    assert!(
        run.stdout
            .contains("failed: [s2] handler restart k3s => not healthy within 3s"),
        "{}",
        run.all()
    );
    for host in ["s3", "a1", "a2", "a3"] {
        assert!(
            fleet.restarts(host).is_empty(),
            "{host} was restarted after s2 failed"
        );
        // Changed, not restarted: pending, not failed, with why.
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("pending: [{host}] handler restart k3s")))
            .unwrap_or_else(|| panic!("{host} must say it was not restarted: {}", run.all()));
        assert!(
            line.contains(
                "=> the rollout stopped before this host's turn because `restart k3s` failed on s2"
            ),
            "{line}"
        );
        let recap = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{host} ")) && l.contains(" : ok="))
            .unwrap_or_else(|| panic!("{host} recap: {}", run.all()));
        assert!(
            recap.contains("failed=0") && recap.contains("pending=1"),
            "{recap}"
        );
    }
    // Only the host that failed is counted failed; the real error is in
    // sight, the not-run tasks folded into one line per reason.
    assert_eq!(run.stdout.matches("failed=1").count(), 1, "{}", run.all());
    assert!(
        !run.stdout
            .contains("not run: the rollout stopped before this host's restart\n"),
        "{}",
        run.all()
    );

    // The stopped rollout is state on the nodes, not memory: the next run
    // knows s2, s3 and the agents still owe their restart.
    std::fs::remove_file(fleet.host_dir("s2").join("state/never_ready")).unwrap();
    let check = fleet.apply(&["--check", "-v"]);
    assert_eq!(check.code, 2, "a pending restart is drift: {}", check.all());
    for host in ["s2", "s3", "a1", "a2", "a3"] {
        let line = format!("would change: [{host}] handler restart k3s");
        assert!(check.stdout.contains(&line), "{host}: {}", check.all());
    }
    assert!(
        check
            .stdout
            .contains("pending from an earlier run that did not finish"),
        "{}",
        check.all()
    );
    assert!(!check.stdout.contains("[s1] handler"), "{}", check.all());
    let (_, doc) = fleet.report(&[]);
    let maxage = common::control(&doc, "s3", "1.2.17");
    assert_eq!(maxage["verdict"], "unknown", "{maxage}");
    assert!(
        maxage["why"]
            .as_str()
            .unwrap_or_default()
            .contains("not in effect")
            || maxage["found"]
                .as_str()
                .unwrap_or_default()
                .contains("not in effect"),
        "{maxage}"
    );
    assert_eq!(common::control(&doc, "s1", "1.2.17")["verdict"], "pass");
    // apply finishes the rollout through the same gate, and then owes nothing.
    let run = fleet.apply(&["-e", "k3s_health_interval=0.2 k3s_health_timeout=10"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        fleet.restarts("s1").len(),
        1,
        "s1 had finished: {}",
        run.all()
    );
    assert_eq!(fleet.restarts("s2").len(), 2);
    for host in ["s3", "a1", "a2", "a3"] {
        assert_eq!(fleet.restarts(host).len(), 1, "{host}: {}", run.all());
    }
    let again = fleet.apply(&["--check"]);
    assert_eq!(again.code, 0, "{}", again.all());
    let (_, doc) = fleet.report(&[]);
    assert_eq!(common::control(&doc, "s3", "1.2.17")["verdict"], "pass");
}

#[test]
fn invalid_content_is_refused_before_anything_is_written_and_backups_stay_out_of_manifests() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("a1:agent:{V}")]);
    let dir = fleet.dir.join("play");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    // An agent config with a server-only key: k3s agent would exit on it.
    std::fs::write(
        dir.join("templates/agent.yaml.hbs"),
        "protect-kernel-defaults: true\nkube-apiserver-arg:\n  - 'a=b'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        r#"
- hosts: all
  tasks:
    - name: agent config
      when: k3s_role == 'agent'
      file: { dest: /etc/rancher/k3s/config.yaml, template: agent.yaml.hbs, mode: "0600", validate: k3s_config }
    - name: manifest v1
      when: k3s_role == 'server'
      file: { dest: /var/lib/rancher/k3s/server/manifests/x.yaml, content: "{{manifest}}", backup: true, validate: manifest }
"#,
    )
    .unwrap();
    let play = dir.join("site.yaml");
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let base = [
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        play.to_str().unwrap(),
    ];
    let manifest = |name: &str| {
        format!(
            "{{\"manifest\": \"apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: {name}\\n\"}}"
        )
    };
    let mut args = base.to_vec();
    let m1 = manifest("one");
    args.extend(["-e", &m1]);
    // Content is rendered and validated before any host is contacted: the run is refused as invalid input.
    let run = fleet.khard(&args);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains("agent config") && run.stderr.contains("not a `k3s agent` flag"),
        "{}",
        run.all()
    );
    assert_eq!(
        fleet.sshd_log("a1").matches("Accepted publickey").count(),
        0,
        "a host was contacted"
    );
    assert!(
        fleet
            .read("a1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .is_none(),
        "an invalid config was written"
    );
    assert!(
        fleet
            .snapshot("a1")
            .iter()
            .all(|(p, _, _)| !p.contains(".khard")),
        "temp files left behind"
    );
    let mut first = base.to_vec();
    first.extend(["--limit", "s1", "-e", &m1]);
    let wrote = fleet.khard(&first);
    assert_eq!(wrote.code, 0, "{}", wrote.all());

    // A broken manifest is refused; a good one replaces the old, whose backup is outside the manifests folder.
    let mut bad = base.to_vec();
    bad.extend(["--limit", "s1", "-e", "manifest='kind: [broken'"]);
    let refused = fleet.khard(&bad);
    assert_eq!(refused.code, 5, "{}", refused.all());
    assert!(
        refused.stderr.contains("refusing to write invalid content"),
        "{}",
        refused.all()
    );
    assert!(
        fleet
            .read("s1", "/var/lib/rancher/k3s/server/manifests/x.yaml")
            .unwrap()
            .contains("name: one")
    );
    let mut good = base.to_vec();
    let m2 = manifest("two");
    good.extend(["--limit", "s1", "-e", &m2]);
    let replaced = fleet.khard(&good);
    assert_eq!(replaced.code, 0, "{}", replaced.all());
    assert!(
        fleet
            .read("s1", "/var/lib/rancher/k3s/server/manifests/x.yaml")
            .unwrap()
            .contains("name: two")
    );
    let manifests: Vec<String> =
        std::fs::read_dir(fleet.path("s1", "/var/lib/rancher/k3s/server/manifests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(
        manifests,
        ["x.yaml"],
        "backups or temp files in the manifests folder"
    );
    let backups = fleet.path(
        "s1",
        "/var/backups/khard/var/lib/rancher/k3s/server/manifests",
    );
    let kept: Vec<_> = std::fs::read_dir(&backups)
        .expect("backup folder")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        std::fs::read_to_string(&kept[0])
            .unwrap()
            .contains("name: one")
    );
}

/// The control-character boundary holds on a terminal too (issue 24): with
/// the progress display on, a task name, its output (-vv), a health wait
/// and a handler's name carrying an OSC title and CSI sequences are shown
/// escaped; only khard's own drawing reaches the terminal raw.
#[test]
fn a_terminal_shows_node_and_input_text_escaped() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}")]);
    let play = fleet.dir.join("evil.yaml");
    std::fs::write(
        &play,
        "- hosts: all\n  tasks:\n    - name: \"title \\u001b]0;pwned\\u0007 \\u001b[2J\"\n      command: { cmd: \"printf '\\\\033]0;pwned-too\\\\007\\\\033[8mhidden'\" }\n      notify: \"bell \\u001b]0;pwned-handler\\u0007\"\n  handlers:\n    - name: \"bell \\u001b]0;pwned-handler\\u0007\"\n      command: { cmd: \"true\" }\n",
    )
    .unwrap();
    let (inv, kh) = (fleet.inventory(), fleet.known_hosts());
    let args = [
        "apply",
        "-vv",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        play.to_str().unwrap(),
    ];
    let run = fleet.khard_in_pty(&args, None);
    assert_eq!(run.code, 0, "{}", run.all());
    for raw in ["\u{1b}]0;pwned", "\u{1b}[8m", "\u{1b}[2J", "\u{7}"] {
        assert!(
            !run.stdout.contains(raw),
            "{raw:?} raw on the terminal: {:?}",
            run.stdout
        );
    }
    for shown in [
        "\\e]0;pwned\\x07",
        "\\e]0;pwned-too\\x07\\e[8mhidden",
        "bell \\e]0;pwned-handler",
    ] {
        assert!(
            run.stdout.contains(shown),
            "`{shown}` not shown: {:?}",
            run.stdout
        );
    }
}
