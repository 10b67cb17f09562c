//! Secrets never reach output: every string that leaves khard (terminal,
//! JSON, JUnit, errors) passes through [`Redactor::scrub`].

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Variables that are secret without being declared so.
pub const ALWAYS_SECRET: &[&str] = &[
    "k3s_token",
    "token",
    "k3s_agent_token",
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_become_password",
    "ansible_become_pass",
];

/// A variable listing more secret variable names, e.g. `secret_vars: [db_password]`.
pub const DECLARE_VAR: &str = "secret_vars";

pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// Collects secret values from one host's variables.
    pub fn learn(&mut self, vars: &Map<String, Value>) {
        let mut names: BTreeSet<String> = ALWAYS_SECRET.iter().map(|s| (*s).to_owned()).collect();
        if let Some(Value::Array(declared)) = vars.get(DECLARE_VAR) {
            names.extend(declared.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        for name in names {
            if let Some(v) = vars.get(&name) {
                self.add_value(v);
            }
        }
    }

    fn add_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.add(s),
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| self.add_value(i)),
            Value::Object(map) => map.values().for_each(|i| self.add_value(i)),
            _ => {}
        }
    }

    /// Adds a secret value; values shorter than 4 characters would redact
    /// ordinary words, so they are refused here (and must not be secrets).
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.values.iter().any(|v| v == secret) {
            self.values.push(secret.to_owned());
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn contains_secret(&self, text: &str) -> bool {
        self.values.iter().any(|v| text.contains(v.as_str()))
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_known_and_declared_secrets() {
        let mut r = Redactor::default();
        r.learn(json!({"k3s_token": "K10abc::server:s3cr3t", "db": "hunter22", "secret_vars": ["db"], "plain": "visible"}).as_object().unwrap());
        let text = "token: K10abc::server:s3cr3t db=hunter22 plain=visible";
        assert_eq!(
            r.scrub(text),
            "token: [redacted] db=[redacted] plain=visible"
        );
        assert!(r.contains_secret(text));
        assert!(!r.contains_secret("nothing here"));
    }
}
