#!/usr/bin/env python3
"""bench/report.py WORK: the markdown results table of one bench/run.sh run.
bench/report.py WORK --background RUN MAX: exit 1 if, in a step of RUN, other
processes than the benchmark's used more than MAX cores on average (printed).

Reads WORK/meta.tsv (key TAB value) and WORK/manifest.tsv (run TAB step TAB
prefix). For a step, PREFIX.time holds "wall_us exit_code machine_ticks
fleet_ticks clk_tck" (fan-out: failures instead of the exit code): the CPU
time the whole machine and the fleet's processes (each host's sshd with all
its sessions, and the delay proxy) spent from the start of the step to 0.2 s
after its end. PREFIX.rusage: the /usr/bin/time line "user sys maxrss_kib"
(last line; GNU time puts "Command exited with non-zero status" above it) of
khard, or of the N ssh clients together. PREFIX.out: khard's --format json
document; PREFIX.err its stderr. "other" CPU = machine - fleet - own: what
processes outside the benchmark used (a compiler, say).
Medians are over runs; ratios to (a) are the median of the per-run ratios
(each run's khard steps against the same run's fan-out, on the same fleet).
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

STEPS = {
    "a": "a · OpenSSH fan-out, `ssh root@ADDR true` to all hosts at once",
    "a2": "a2 · the same fan-out with `-o KexAlgorithms=curve25519-sha256` (khard's key exchange), informational",
    "b": "b · khard apply, fresh hosts",
    "c": "c · khard apply, nothing to change",
    "c1": "c1 · khard apply, nothing to change, the built-in role copied to disk",
    "c2": "c2 · khard apply, nothing to change, that copy with every task twice",
    "d": "d · khard apply --check after apply",
    "e": "e · khard report (every node's compliance audit) after apply",
}
ORDER = ["a", "a2", "b", "c", "c1", "c2", "d", "e"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.3f}"):
    return "–" if x is None else spec.format(x)


def last_line(path):
    try:
        lines = [l for l in Path(path).read_text().splitlines() if l.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def load_step(step, prefix, n_hosts):
    m = {"step": step, "prefix": prefix, "errors": []}
    t = last_line(prefix + ".time").split()
    m["wall"] = int(t[0]) / 1e6 if t else None
    ru = last_line(prefix + ".rusage").split()
    try:
        m["cpu"] = float(ru[0]) + float(ru[1])
        m["rss"] = int(ru[2]) / 1024
    except (IndexError, ValueError):
        m["cpu"] = m["rss"] = None
    m["machine"] = m["hosts_cpu"] = m["other"] = m["other_cores"] = None
    if len(t) >= 5:
        hz = int(t[4])
        m["machine"], m["hosts_cpu"] = int(t[2]) / hz, int(t[3]) / hz
        m["other"] = max(0.0, m["machine"] - m["hosts_cpu"] - (m["cpu"] or 0))
        m["other_cores"] = m["other"] / (m["wall"] + 0.2)
    if step in ("a", "a2"):
        fails = int(t[1]) if len(t) > 1 else n_hosts
        m.update(rc=None, ok=n_hosts - fails, changed=None, unknown=None, channels=1, rss=None,
                 kms=None, failed=fails, unreachable=None)
        if fails:
            m["errors"].append("OpenSSH: " + Path(prefix + ".err").read_text()[-1500:])
        return m
    m["rc"] = int(t[1]) if len(t) > 1 else None
    try:
        doc = json.loads(Path(prefix + ".out").read_text())
    except (OSError, ValueError) as e:
        doc = None
        m["errors"].append(f"no JSON document on stdout ({e})")
    if doc and step == "e":
        # The compliance document: a node is ok when it was judged on a benchmark.
        nodes = doc.get("nodes", [])
        m.update(ok=sum(1 for x in nodes if x.get("benchmark") != "unknown"), changed=0,
                 unknown=sum(x["totals"]["unknown"] for x in nodes), failed=sum(x["totals"]["fail"] for x in nodes),
                 unreachable=None, channels=None, kms=None)
        if len(nodes) != n_hosts:
            m["errors"].append(f"the report lists {len(nodes)} nodes, the fleet has {n_hosts}")
    elif doc:
        recap = doc.get("recap", {})
        ch = doc.get("channels", {})
        m["ok"] = sum(1 for c in recap.values() if c.get("failed", 0) == 0 and c.get("unreachable", 0) == 0)
        if len(recap) != n_hosts:
            m["errors"].append(f"recap lists {len(recap)} hosts, the fleet has {n_hosts}")
            m["ok"] = min(m["ok"], len(recap))
        m["changed"] = sum(c.get("changed", 0) for c in recap.values())
        m["unknown"] = sum(c.get("unknown", 0) for c in recap.values())
        m["failed"] = sum(c.get("failed", 0) for c in recap.values())
        m["unreachable"] = sum(c.get("unreachable", 0) for c in recap.values())
        m["channels"] = max(ch.values()) if ch else None
        m["channels_min"] = min(ch.values()) if ch else None
        m["kms"] = doc.get("duration_ms")
        bad = [e for e in doc.get("events", []) if e.get("status") in ("failed", "unreachable")]
        for e in bad[:5]:
            m["errors"].append(f"{e.get('host')}: {e.get('task')}: {e.get('status')}: "
                               f"{(e.get('message') or '')[:400]}")
        if len(bad) > 5:
            m["errors"].append(f"... {len(bad) - 5} more failed/unreachable events")
    else:
        m.update(ok=0, changed=None, unknown=None, failed=None, unreachable=None, channels=None, kms=None)
    if m["rc"] != 0:
        err = Path(prefix + ".err").read_text(errors="replace") if Path(prefix + ".err").exists() else ""
        m["errors"].append(f"exit code {m['rc']}; stderr (last 1500 chars):\n" + err[-1500:])
    return m


def combine(ms):
    """One figure per run from repeated steps (c1.1, c1.2, ...): medians of the
    times, the worst of the outcomes."""
    if len(ms) == 1:
        return ms[0]
    m = {"step": ms[0]["step"].split(".")[0], "prefix": ms[0]["prefix"], "errors": [],
         "reps": len(ms)}
    for k in ("wall", "cpu", "machine", "hosts_cpu", "other", "kms"):
        m[k] = med([x.get(k) for x in ms])
    for k in ("rss", "other_cores", "changed", "unknown", "failed", "unreachable", "channels"):
        xs = [x.get(k) for x in ms if x.get(k) is not None]
        m[k] = max(xs) if xs else None
    oks = [x.get("ok") for x in ms]
    m["ok"] = min(o if o is not None else 0 for o in oks)
    rcs = [x.get("rc") for x in ms]
    m["rc"] = next((rc for rc in rcs if rc != 0), 0)
    for x in ms:
        m["errors"] += [f"({x['step']}) {e}" for e in x["errors"]]
    return m


def load_runs(work, n):
    raw = defaultdict(lambda: defaultdict(list))
    for line in (work / "manifest.tsv").read_text().splitlines():
        r, step, prefix = line.split("\t")
        m = load_step(step.split(".")[0], prefix, n)
        m["step"] = step
        raw[int(r)][step.split(".")[0]].append(m)
    return {r: {s: combine(ms) for s, ms in steps.items()} for r, steps in raw.items()}


def background(work, run, limit):
    n = 0
    for line in (work / "meta.tsv").read_text().splitlines():
        k, _, v = line.partition("\t")
        if k == "hosts":
            n = int(v)
    worst = []
    for line in (work / "manifest.tsv").read_text().splitlines():
        r, step, prefix = line.split("\t")
        if int(r) == run:
            m = load_step(step.split(".")[0], prefix, n)
            if m["other_cores"] is not None:
                worst.append((m["other_cores"], step))
    worst.sort(reverse=True)
    print(", ".join(f"step {s}: {c:.2f} cores" for c, s in worst[:3]) or "no figures")
    return 1 if worst and worst[0][0] > limit else 0


def main():
    if len(sys.argv) == 5 and sys.argv[2] == "--background":
        sys.exit(background(Path(sys.argv[1]), int(sys.argv[3]), float(sys.argv[4])))
    work = Path(sys.argv[1])
    meta = {}
    for line in (work / "meta.tsv").read_text().splitlines():
        k, _, v = line.partition("\t")
        meta[k] = v
    n = int(meta["hosts"])
    rtt = int(meta["rtt_ms"])
    x2 = meta["tasks_x2"] == "1"
    forks = meta["forks"]
    runs = load_runs(work, n)
    x2pairs = max((runs[r]["c1"].get("reps", 1) for r in runs if "c1" in runs[r]), default=1)
    rs = sorted(runs)
    steps = [s for s in ORDER if any(s in runs[r] for r in rs)]

    def vals(step, key):
        return [runs[r][step].get(key) for r in rs if step in runs[r]]

    def ratio(step, base="a"):
        out = []
        for r in rs:
            if step in runs[r] and base in runs[r]:
                w, a = runs[r][step]["wall"], runs[r][base]["wall"]
                out.append(w / a if w is not None and a else None)
        return med(out)

    P = print
    title = f"# khard fleet benchmark: N={n}"
    if forks[0].isdigit() and not forks.startswith("100 ("):
        title += f", --forks {forks}"
    if rtt:
        title += f", RTT {rtt} ms"
    if x2:
        title += ", tasks x2"
    P(title)
    P()
    P(f"`{meta['command']}` · {meta['date']} · {len(rs)} run(s), median of each figure · total {meta.get('total_s', '?')} s")
    P()
    P(f"- Machine: {meta['nproc']} CPU(s) ({meta['cpu']}), {meta['mem']} RAM, {meta['kernel']}, {meta['openssh']}")
    P(f"- khard: {meta['khard']}; repo at {meta['commit']}; the cis_k3s role built into the binary is "
      f"that of {meta.get('role_copy', '?')}")
    ups = [meta[k] for k in sorted(meta) if k.startswith("fleet_up_s_r")]
    P(f"- Fleet: 1 server + {n - 1} agents, k3s v1.30.6+k3s1, one real sshd per host (tests/fleet/fleet.sh) in a "
      f"network namespace, fleet folder on /dev/shm, loopback quickack {'on' if meta['quickack'] != '0' else 'off'}; "
      f"a fresh fleet per run (that is the reset between runs), up in {', '.join(ups)} s")
    busy = [meta[k] for k in sorted(meta) if k.startswith("busy_before_r")]
    P(f"- Background load just before each run (cores busy over 1 s, after waiting for < 0.25): {', '.join(busy)}")
    P(f"- khard: `apply --format json --forks {forks.split()[0]}`; each run: one unmeasured OpenSSH fan-out "
      f"(warm-up), then a, b, c{', c1, c2' if x2 else ''}, d in that order")
    if rtt:
        P(f"- RTT {rtt} ms: bench/delay_proxy.py in front of every host ({rtt / 2:g} ms each way); OpenSSH and khard "
          f"both connect through it. Checks: echo round trip (median of 50, bench/delay_proxy.py selftest) "
          f"{(meta.get('proxy_selftest_ms') or '? ?').split()[0]} ms direct → "
          f"{(meta.get('proxy_selftest_ms') or '? ?').split()[-1]} ms proxied; median of 7: time to sshd's banner "
          f"{meta.get('proxy_banner_direct_ms')} ms direct → {meta.get('proxy_banner_proxied_ms')} ms proxied "
          f"(expect direct + {rtt}); one `ssh true` {meta.get('proxy_ssh_direct_ms')} ms → {meta.get('proxy_ssh_proxied_ms')} ms")
    P()
    P("| step | wall s | × a | own CPU s | hosts' CPU s | other CPU s | peak RSS MiB | exit | hosts ok | changed | channels/host (max) | khard-reported ms |")
    P("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in steps:
        rc = vals(s, "rc")
        rcs = "–" if s in ("a", "a2") else " ".join(str(x) for x in rc)
        ok = min(x for x in vals(s, "ok") if x is not None) if any(x is not None for x in vals(s, "ok")) else 0
        ch = vals(s, "changed")
        chs = "–" if s in ("a", "a2") else (fmt(med(ch), "{:g}") if len(set(ch)) <= 1 else
                                     " ".join(fmt(x, "{:g}") for x in ch))
        unk = [x for x in vals(s, "unknown") if x]
        if unk:
            chs += f" (+{max(unk)} unknown)"
        chan = vals(s, "channels")
        chan_max = max((x for x in chan if x is not None), default=None)
        P(f"| {STEPS[s]} | {fmt(med(vals(s, 'wall')))} | {'1' if s == 'a' else fmt(ratio(s), '{:.2f}')} | "
          f"{fmt(med(vals(s, 'cpu')), '{:.2f}')} | {fmt(med(vals(s, 'hosts_cpu')), '{:.2f}')} | "
          f"{fmt(med(vals(s, 'other')), '{:.2f}')} | "
          f"{fmt(med(vals(s, 'rss')), '{:.1f}')} | {rcs} | "
          f"{ok}/{n} | {chs} | {fmt(chan_max, '{:g}')} | {fmt(med(vals(s, 'kms')), '{:g}')} |")
    P()
    P("Wall: from just before the command starts to its end, inside the netns. Own CPU (user+sys) and peak RSS: "
      "GNU time, of khard (b–d) or of all N `ssh` clients together (a, a2). Hosts' CPU: every host's sshd "
      f"with all its sessions (sshd children, shells, the commands they ran){' and the delay proxy' if rtt else ''}, "
      "from the start of the step to 0.2 s after its end. Other CPU: the rest of the machine meanwhile "
      f"(/proc/stat; the machine has {meta['nproc']} CPUs, so at most {meta['nproc']} × wall in all). hosts ok: hosts "
      "with failed = 0 and unreachable = 0 (worst run). changed: tasks changed, summed over hosts. "
      "× a: median of the per-run ratios."
      + (f" c1 and c2: each run's figure is the median of {x2pairs} alternating c1/c2 pairs." if x2 else ""))
    if "a2" in steps:
        P()
        P("Against a2 (same key exchange as khard): " + ", ".join(
            f"{s}/a2 = {fmt(ratio(s, 'a2'), '{:.2f}')}" for s in steps if s not in ("a", "a2")) + ".")
    P()
    P("Per run (wall s):")
    P()
    P("| run | " + " | ".join(steps) + " | " + " | ".join(f"{s}/a" for s in steps if s != "a")
      + " | other processes, max cores |")
    P("|--:|" + "--:|" * (2 * len(steps)))
    for r in rs:
        row = [fmt(runs[r].get(s, {}).get("wall")) for s in steps]
        a = runs[r].get("a", {}).get("wall")
        rat = [fmt(runs[r][s]["wall"] / a if a and s in runs[r] and runs[r][s]["wall"] else None, "{:.2f}")
               for s in steps if s != "a"]
        oc = max((runs[r][s]["other_cores"] for s in steps if s in runs[r]
                  and runs[r][s]["other_cores"] is not None), default=None)
        P(f"| {r} | " + " | ".join(row) + " | " + " | ".join(rat) + f" | {fmt(oc, '{:.2f}')} |")
    disc = [v for k, v in sorted(meta.items()) if k.startswith("discarded_t")]
    kept = [f"run {k[len('kept_busy_r'):]}: {v}" for k, v in sorted(meta.items()) if k.startswith("kept_busy_r")]
    if disc or kept:
        P()
    if disc:
        P("Discarded and done again because other processes were busy (max cores of other processes in a step): "
          + "; ".join(disc) + ".")
    if kept:
        P("Kept although other processes were busy (no retries left): " + "; ".join(kept) + ".")
    P()

    # ---------------------------------------------------------------- targets
    def allruns(step, pred):
        return all(step in runs[r] and pred(runs[r][step]) for r in rs)

    correct = {
        "b": allruns("b", lambda m: m["rc"] == 0 and m["ok"] == n),
        "c": allruns("c", lambda m: m["rc"] == 0 and m["ok"] == n and m["changed"] == 0),
        "d": allruns("d", lambda m: m["rc"] == 0 and m["ok"] == n and m["changed"] == 0),
        "e": allruns("e", lambda m: m["rc"] == 0 and m["ok"] == n and m["failed"] == 0),
    }
    if x2:
        for s in ("c1", "c2"):
            correct[s] = allruns(s, lambda m: m["rc"] == 0 and m["ok"] == n and m["changed"] == 0)
    all_ok = all(correct.values())
    lines = []

    def judge(name, ok, detail):
        lines.append(f"- **{'PASS' if ok else 'FAIL'}** {name}: {detail}")

    def na(name, why):
        lines.append(f"- n/a {name}: {why}")

    judge("correctness", all_ok and allruns("a", lambda m: m["ok"] == n) and allruns("a2", lambda m: m["ok"] == n),
          "every step of every run exits 0 with every host ok; c and d change nothing ("
          + ", ".join(f"{k} {'ok' if v else 'NOT ok'}" for k, v in correct.items()) + ")")
    rc_, rb = ratio("c"), ratio("b")
    if n == 20 and not rtt:
        judge("N=20: no-change apply c ≤ 0.5 × fan-out a", correct["c"] and rc_ is not None and rc_ <= 0.5,
              f"c/a = {fmt(rc_, '{:.2f}')}")
        judge("N=20: fresh apply b ≤ 1.0 × fan-out a", correct["b"] and rb is not None and rb <= 1.0,
              f"b/a = {fmt(rb, '{:.2f}')}")
    elif n == 20:
        na("N=20 ratio targets", f"judged without RTT (here, informational: c/a = {fmt(rc_, '{:.2f}')}, b/a = {fmt(rb, '{:.2f}')})")
    else:
        na("N=20 ratio targets", "run with --hosts 20")
    rss_max = max((x for s in steps if s != "a" for x in vals(s, "rss") if x is not None), default=None)
    if n == 200 and forks.split()[0] == "200":
        judge("N=200 --forks 200: every host ok in every step", all_ok, "see correctness")
        judge("N=200 --forks 200: c ≤ 0.5 × a", correct["c"] and rc_ is not None and rc_ <= 0.5, f"c/a = {fmt(rc_, '{:.2f}')}")
        judge("N=200 --forks 200: khard peak RSS ≤ 64 MiB", rss_max is not None and rss_max <= 64,
              f"max over all khard steps and runs {fmt(rss_max, '{:.1f}')} MiB")
    else:
        na("N=200 targets", f"run with --hosts 200 --forks 200 (peak RSS here: {fmt(rss_max, '{:.1f}')} MiB)")
    if n in (100, 1000) and not rtt and "default" in forks:
        judge(f"N={n}: no-change apply c ≤ 0.25 × fan-out a (issue 27)", correct["c"] and rc_ is not None and rc_ <= 0.25,
              f"c/a = {fmt(rc_, '{:.2f}')}")
        judge(f"N={n}: fresh apply b ≤ 0.6 × fan-out a (issue 27)", correct["b"] and rb is not None and rb <= 0.6,
              f"b/a = {fmt(rb, '{:.2f}')}")
    else:
        na("issue 27 ratio targets", "run with --hosts 100 or --hosts 1000")
    if n == 1000:
        crss = max((x for x in vals("c", "rss") if x is not None), default=None)
        judge("N=1000: khard peak RSS ≤ 64 MiB on a no-change apply c (issue 27)", crss is not None and crss <= 64,
              f"c: {fmt(crss, '{:.1f}')} MiB (every khard step: max {fmt(rss_max, '{:.1f}')} MiB)")
    cmax = max((x for x in vals("c", "channels") if x is not None), default=None)
    bmax = max((x for x in vals("b", "channels") if x is not None), default=None)
    judge("channels/host ≤ 2 on a no-change run (c)", cmax is not None and cmax <= 2, f"max {fmt(cmax, '{:g}')}")
    judge("channels/host ≤ 4 on a fresh apply (b)", bmax is not None and bmax <= 4, f"max {fmt(bmax, '{:g}')}")
    ew = med(vals("e", "wall"))
    cw = med(vals("c", "wall"))
    judge("khard report e no slower than a no-change apply c (issue 23)",
          correct["e"] and ew is not None and cw is not None and ew <= cw,
          f"e = {fmt(ew)} s, c = {fmt(cw)} s, e/c = {fmt(ratio('e', 'c'), '{:.2f}')}")
    if rtt == 20 and n == 20:
        judge("RTT 20 ms, N=20: no-change apply c ≤ 1 s", correct["c"] and cw is not None and cw <= 1.0,
              f"c = {fmt(cw)} s")
    else:
        na("RTT target", f"run with --hosts 20 --rtt-ms 20 (c here: {fmt(cw)} s)")
    if x2:
        per = []
        for r in rs:
            if "c1" in runs[r] and "c2" in runs[r] and runs[r]["c1"]["wall"]:
                per.append(runs[r]["c2"]["wall"] / runs[r]["c1"]["wall"])
        q = med(per)

        def cpu_ratio(k):
            return med([runs[r]["c2"][k] / runs[r]["c1"][k] for r in rs if "c1" in runs[r] and "c2" in runs[r]
                        and runs[r]["c1"].get(k) and runs[r]["c2"].get(k) is not None])
        judge("tasks x2: no-change wall changes < 10 %", correct["c1"] and correct["c2"] and q is not None
              and abs(q - 1) < 0.10,
              f"c2/c1 = {fmt(q, '{:.3f}')} (per run: {', '.join(f'{x:.3f}' for x in per)}); "
              f"c2/c (built-in playbook) = {fmt(ratio('c2', 'c'), '{:.3f}')}; CPU c2/c1: khard "
              f"{fmt(cpu_ratio('cpu'), '{:.2f}')}, hosts {fmt(cpu_ratio('hosts_cpu'), '{:.2f}')}")
    else:
        na("tasks x2 target", "run with --tasks-x2")
    P("## Targets")
    P()
    for l in lines:
        P(l)

    errs = [(r, s, e) for r in rs for s in steps if s in runs[r] for e in runs[r][s]["errors"]]
    if errs:
        P()
        P("## Errors")
        P()
        for r, s, e in errs[:40]:
            P(f"run {r}, step {s}:")
            P()
            P("```")
            P(e.rstrip())
            P("```")
        if len(errs) > 40:
            P(f"... {len(errs) - 40} more; raw outputs in {work}")
    P()
    P(f"Raw outputs: `{work}`")


if __name__ == "__main__":
    main()
