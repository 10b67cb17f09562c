//! What rendering a task for one host needs: the compiled templates, the
//! host's variables, and the `files/` and `templates/` of the role the task
//! came from.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::TaskError;
use crate::error::did_you_mean;
use crate::lang::error::LangError;
use crate::lang::template::{Templates, Text};

/// Everything rendering needs: the compiled templates, the host's variables,
/// and the files of the role the task came from.
pub struct Render<'a> {
    pub templates: &'a Templates,
    pub vars: &'a Map<String, Value>,
    /// `vars` as a template context, built once per host (see [`Templates::context`]).
    pub ctx: &'a handlebars::Context,
    pub files: &'a Files,
}

impl Render<'_> {
    pub fn text(&self, t: &Text) -> Result<String, TaskError> {
        Ok(self.templates.render_text_in(t, self.ctx)?)
    }

    pub fn opt(&self, t: &Option<Text>) -> Result<Option<String>, TaskError> {
        t.as_ref().map(|t| self.text(t)).transpose()
    }
}

/// The `files/` and `templates/` a task may refer to.
#[derive(Debug, Default)]
pub struct Files {
    /// Where they live, for messages.
    pub origin: String,
    pub files: BTreeMap<String, String>,
    /// Template name (relative to templates/) → name registered with the engine.
    pub templates: BTreeMap<String, String>,
}

impl Files {
    pub fn file(&self, name: &str) -> Result<String, String> {
        self.files
            .get(name)
            .cloned()
            .ok_or_else(|| self.missing("files", name, self.files.keys()))
    }

    pub fn template(
        &self,
        t: &Templates,
        name: &str,
        ctx: &handlebars::Context,
    ) -> Result<String, LangError> {
        let registered = self
            .templates
            .get(name)
            .ok_or_else(|| self.missing("templates", name, self.templates.keys()))?;
        t.render_file_in(registered, ctx)
    }

    pub fn has(&self, folder: &str, name: &str) -> bool {
        if folder == "files" {
            self.files.contains_key(name)
        } else {
            self.templates.contains_key(name)
        }
    }

    pub fn missing<'a>(
        &self,
        folder: &str,
        name: &str,
        known: impl Iterator<Item = &'a String>,
    ) -> String {
        let known: Vec<&str> = known.map(String::as_str).collect();
        let hint = did_you_mean(name, known)
            .map(|h| format!(" (did you mean `{h}`?)"))
            .unwrap_or_default();
        format!("no {folder}/{name} in {}{hint}", self.origin)
    }
}
