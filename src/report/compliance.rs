//! `khard report`: every control of each node's benchmark with its verdict
//! (judged in `audit`), per-node and fleet totals, as kube-bench-style text,
//! JSON, or one self-contained HTML page (report.html.hbs: inline CSS, no
//! external assets, a Content-Security-Policy that forbids loading any).

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{Sink, Summary};
use crate::audit::judge::Verdict;
use crate::audit::{NodeAudit, SectionTotals, Totals};
use crate::report::Format;
use crate::terminal::one_line;

const TEMPLATE: &str = include_str!("report.html.hbs");

pub struct Compliance {
    /// Where `out` goes, for messages: `-o`'s path or "stdout".
    pub to: String,
    pub format: Format,
    pub out: Box<dyn Write + Send>,
}

/// Totals of the fleet.
#[derive(Debug, Serialize)]
pub struct Fleet {
    pub nodes: usize,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One benchmark's controls × the nodes it applies to.
#[derive(Debug, Serialize)]
pub struct Matrix {
    pub name: String,
    pub hosts: Vec<String>,
    pub controls: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Serialize)]
pub struct Cell {
    pub host: String,
    pub verdict: Verdict,
    pub label: &'static str,
}

/// What every format shows: the same IDs, verdicts and totals.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub title: &'static str,
    pub generated_at: String,
    pub khard_version: &'static str,
    pub fleet: Fleet,
    pub benchmarks: Vec<Matrix>,
    pub nodes: &'a [NodeAudit],
}

pub fn document(audits: &[NodeAudit]) -> Document<'_> {
    let mut totals = Totals::default();
    let mut by_benchmark: BTreeMap<&str, Vec<&NodeAudit>> = BTreeMap::new();
    for a in audits {
        totals.sum(&a.totals);
        by_benchmark.entry(&a.benchmark).or_default().push(a);
    }
    let benchmarks = by_benchmark
        .into_iter()
        .map(|(name, nodes)| Matrix {
            name: name.to_owned(),
            hosts: nodes.iter().map(|n| n.host.clone()).collect(),
            controls: nodes[0]
                .controls
                .iter()
                .enumerate()
                .map(|(i, c)| Row {
                    id: c.id.clone(),
                    title: c.title.clone(),
                    cells: nodes
                        .iter()
                        .map(|n| Cell {
                            host: n.host.clone(),
                            verdict: n.controls[i].verdict,
                            label: n.controls[i].label,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Document {
        title: "khard CIS compliance report",
        generated_at: utc_now(),
        khard_version: env!("CARGO_PKG_VERSION"),
        fleet: Fleet {
            nodes: audits.len(),
            totals,
        },
        benchmarks,
        nodes: audits,
    }
}

/// The page of a report: each node's not-applicable controls are folded
/// into one list under its table (they are most of an agent's rows).
pub fn page(doc: &Document) -> String {
    let mut value = serde_json::to_value(doc).expect("the report serialises");
    for node in value["nodes"].as_array_mut().into_iter().flatten() {
        let all = node["controls"].take();
        let (na, judged): (Vec<_>, Vec<_>) = all
            .as_array()
            .into_iter()
            .flatten()
            .cloned()
            .partition(|c| c["verdict"] == "not_applicable");
        node["controls"] = serde_json::Value::Array(judged);
        node["not_applicable"] = serde_json::Value::Array(na);
    }
    html(&value)
}

/// The template rendered with `data`; data is escaped by Handlebars.
pub fn html(doc: &impl Serialize) -> String {
    let mut hb = handlebars::Handlebars::new();
    // Strict: a field the template names and the document lacks (a rename
    // on one side) is an error, never an empty cell.
    hb.set_strict_mode(true);
    hb.register_template_string("report", TEMPLATE)
        .expect("the built-in report template parses");
    hb.render("report", doc)
        .expect("the report document renders")
}

/// One line of totals: `12 pass, 1 fail, 2 warn, …`.
fn totals_line(t: &Totals) -> String {
    format!(
        "{} pass, {} fail, {} warn, {} accepted, {} manual, {} not applicable, {} unknown ({} controls)",
        t.pass, t.fail, t.warn, t.accepted, t.manual, t.not_applicable, t.unknown, t.total
    )
}

/// kube-bench's layout: `[FAIL] 1.2.17 title`, what was found, the
/// remediation (the benchmark's and khard's), section and node totals.
pub fn text(doc: &Document, out: &mut dyn Write) -> std::io::Result<()> {
    for n in doc.nodes {
        let version = n.k3s_version.as_deref().unwrap_or("k3s version unknown");
        writeln!(
            out,
            "\n== {} ({}, {version}): benchmark {}",
            n.host, n.role, n.benchmark
        )?;
        for note in &n.notes {
            writeln!(out, "   note: {}", one_line(note))?;
        }
        let mut sections = n.sections.iter();
        let mut current: Option<&str> = None;
        for c in &n.controls {
            if current != Some(c.section.as_str()) {
                close_section(out, current, &mut sections)?;
                current = Some(c.section.as_str());
                writeln!(out, "\n[INFO] {}", c.section)?;
            }
            let unscored = if c.scored { "" } else { " (not scored)" };
            writeln!(out, "[{}] {} {}{unscored}", c.label, c.id, c.title)?;
            match c.verdict {
                Verdict::Pass => {}
                Verdict::Fail | Verdict::Warn | Verdict::Accepted => {
                    writeln!(out, "       found: {}", one_line(&c.found))?;
                    writeln!(out, "       wants: {}", c.test)?;
                    if !c.why.is_empty() {
                        writeln!(out, "       why: {}", one_line(&c.why))?;
                    }
                    if !c.remediation.is_empty() {
                        writeln!(out, "       remediation: {}", c.remediation)?;
                    }
                    if let Some(fix) = khard_fix(&c.tasks, &c.variables) {
                        writeln!(out, "       khard: {}", one_line(&fix))?;
                    }
                }
                _ if !c.why.is_empty() => writeln!(out, "       why: {}", one_line(&c.why))?,
                _ => {}
            }
        }
        close_section(out, current, &mut sections)?;
        writeln!(out, "== {}: {}", n.host, totals_line(&n.totals))?;
    }
    writeln!(
        out,
        "\n== fleet ({} node(s)): {}",
        doc.fleet.nodes,
        totals_line(&doc.fleet.totals)
    )?;
    Ok(())
}

/// The totals line under a section, as kube-bench prints "== Summary ==" per section.
fn close_section<'a>(
    out: &mut dyn Write,
    current: Option<&str>,
    sections: &mut impl Iterator<Item = &'a SectionTotals>,
) -> std::io::Result<()> {
    if current.is_none() {
        return Ok(());
    }
    if let Some(s) = sections.next() {
        writeln!(out, "   -- {}: {}", s.section, totals_line(&s.totals))?;
    }
    Ok(())
}

/// What khard offers for a control: its tasks and the variables behind them.
pub fn khard_fix(tasks: &[String], variables: &[String]) -> Option<String> {
    if tasks.is_empty() {
        return None;
    }
    let mut text = format!("khard apply remediates it (task: {})", tasks.join("; "));
    if !variables.is_empty() {
        text.push_str(&format!("; set by {}", variables.join(", ")));
    }
    Some(text)
}

impl Sink for Compliance {
    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        let doc = document(&s.audits);
        match self.format {
            Format::Json => serde_json::to_writer_pretty(&mut self.out, &doc)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(self.out)),
            Format::Html => self.out.write_all(page(&doc).as_bytes()),
            Format::Human => text(&doc, &mut self.out),
        }
        .and_then(|()| self.out.flush())
        .map_err(|e| {
            format!(
                "the compliance report could not be written to {}: {e}",
                self.to
            )
        })
    }
}

/// What fails `khard report` (`--fail-on`), each level including the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Gate {
    /// Scored controls that fail (kube-bench's FAIL).
    #[default]
    Scored,
    /// Also unscored controls that fail (kube-bench's WARN).
    Warn,
    /// Also controls whose evidence could not be read.
    Unknown,
}

impl Gate {
    /// Whether a verdict fails the run under this gate.
    pub fn fails(self, v: Verdict) -> bool {
        match v {
            Verdict::Fail => true,
            Verdict::Warn => self >= Gate::Warn,
            Verdict::Unknown => self >= Gate::Unknown,
            _ => false,
        }
    }
}

/// The exit code of `khard report`: 2 when a control fails the gate, or a
/// node could not be put on any benchmark (nothing of it was judged).
pub fn exit_code(audits: &[NodeAudit], gate: Gate) -> i32 {
    let bad = audits.iter().any(|a| {
        a.benchmark == crate::audit::UNKNOWN_BENCHMARK
            || a.controls.iter().any(|c| gate.fails(c.verdict))
    });
    if bad { 2 } else { 0 }
}

/// Today's date (UTC) as YYYY-MM-DD: exceptions hold through their last day.
pub fn today() -> String {
    utc_now()[..10].to_owned()
}

/// Now, as RFC 3339 UTC (no date crate for one timestamp).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template renders in the Rust engine (it was designed against
    /// handlebars.js) and escapes what the nodes said.
    #[test]
    /// A document made by the audit itself (not a hand-kept sample): with
    /// the strict renderer, a field renamed on either side fails here.
    fn the_page_renders_a_real_document_strictly() {
        let ev = crate::audit::evidence::Evidence::unavailable("server", "<script>x</script>");
        let audit = crate::audit::audit_node("s1", Some("k3s-cis-1.10"), &ev, &|_| {
            crate::audit::Fix::default()
        });
        let page = page(&document(&[audit]));
        assert!(
            page.contains("s1") && page.contains("k3s-cis-1.10"),
            "{page}"
        );
        assert!(!page.contains("<script>x"), "node text is escaped");
    }

    #[test]
    fn the_page_renders_the_sample_and_escapes_data() {
        let sample: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/report/sample.json")).unwrap();
        let page = html(&sample);
        let fleet = &sample["fleet"];
        assert!(
            page.contains(&format!("id=\"fleet-fail\">{}<", fleet["fail"])),
            "{page}"
        );
        assert!(page.contains("data-verdict=\"fail\""));
        assert!(!page.contains("<script>alert("), "unescaped data");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    /// An exception's reason and signer are the operator's text: a newline
    /// or shell syntax in them cannot forge a line of the text report.
    #[test]
    fn exception_text_cannot_forge_a_report_line() {
        use crate::audit::exceptions::{Exception, apply};
        use crate::audit::judge::Verdict;
        let ev = crate::audit::evidence::Evidence::unavailable("server", "test");
        let mut audit = crate::audit::audit_node("s1", Some("k3s-cis-1.10"), &ev, &|_| {
            crate::audit::Fix::default()
        });
        audit.controls[20].verdict = Verdict::Fail;
        let id = audit.controls[20].id.clone();
        audit.recount();
        let e = Exception {
            control: id,
            nodes: "*".into(),
            benchmark: None,
            reason: "ok\n[PASS] 9.9.9 forged $(touch /tmp/x)".into(),
            expires: "2999-01-01".into(),
            accepted_by: "\"quoted\" 'name'".into(),
            line: 1,
        };
        apply(&mut audit, &[e], "2026-12-07");
        let mut out = Vec::new();
        text(&document(&[audit]), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("\n[PASS] 9.9.9"), "{out}");
        assert!(
            out.contains("ok\\n[PASS] 9.9.9 forged $(touch /tmp/x)"),
            "{out}"
        );
    }

    #[test]
    fn values_from_nodes_stay_on_one_line() {
        assert_eq!(
            one_line("profiling=false\n[PASS] 1.2.1\tx\r"),
            "profiling=false\\n[PASS] 1.2.1\\tx\\r"
        );
        assert_eq!(one_line("é $(x) 'q\""), "é $(x) 'q\"");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_832_000), "2026-11-28T02:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
