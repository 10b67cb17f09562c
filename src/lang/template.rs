//! Handlebars templates, rendered locally with strict undefined-variable
//! errors and no HTML escaping (we write config files, not web pages).

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason,
};
use serde_json::{Map, Value};

use crate::error::InputError;
use crate::lang::error::LangError;

/// Every template and templated string of a run, compiled once.
pub struct Templates {
    hb: Handlebars<'static>,
    /// The source of each template file, to name the variable behind a
    /// helper's missing parameter (Handlebars names only the helper).
    sources: std::collections::HashMap<String, String>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.set_prevent_indent(true);
        hb.register_helper("json", Box::new(json_helper));
        Templates {
            hb,
            sources: Default::default(),
        }
    }
}

/// `{{json value}}` writes the value as JSON, which is also a valid YAML
/// scalar: the safe way to put a string with `:` or `#` into a YAML file.
fn json_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let param = h
        .param(0)
        .filter(|p| !p.is_value_missing())
        .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    out.write(
        &serde_json::to_string(param.value())
            .map_err(|e| RenderErrorReason::Other(e.to_string()))?,
    )?;
    Ok(())
}

/// A string from a task that may contain `{{ }}`; rendered per host.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub raw: String,
    /// Set when `raw` holds a template: the name it was registered under.
    id: Option<String>,
}

impl Text {
    pub fn plain(raw: impl Into<String>) -> Text {
        Text {
            raw: raw.into(),
            id: None,
        }
    }

    pub fn is_template(&self) -> bool {
        self.id.is_some()
    }
}

impl Templates {
    /// Compiles a template file; `name` is how errors refer to it (its path).
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), InputError> {
        self.sources.insert(name.to_owned(), text.to_owned());
        self.hb.register_template_string(name, text).map_err(|e| {
            let (line, col) = e.pos().unwrap_or((1, 1));
            InputError::at(name, line, col, format!("template error: {}", e.reason()))
        })
    }

    /// Compiles a string from a task if it holds `{{ }}`; `place` names where it came from.
    pub fn text(&mut self, place: &str, raw: &str) -> Result<Text, InputError> {
        if !raw.contains("{{") {
            return Ok(Text::plain(raw));
        }
        let id = format!("{place}#{}", self.hb.get_templates().len());
        self.sources.insert(id.clone(), raw.to_owned());
        self.hb.register_template_string(&id, raw).map_err(|e| {
            InputError::new(format!(
                "{place}: template error in `{raw}`: {}",
                e.reason()
            ))
        })?;
        Ok(Text {
            raw: raw.to_owned(),
            id: Some(id),
        })
    }

    /// The variables a template writes right after `prefix` (`'audit-log-maxage={{{cis_audit_log_maxage}}}'`
    /// gives `cis_audit_log_maxage` for `audit-log-maxage=`), in name order.
    pub fn variables_after(&self, prefix: &str) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for src in self.sources.values() {
            for (at, _) in src.match_indices(prefix) {
                // The prefix must start a word: `max-pids=` is not in `pod-max-pids=`.
                let before = src[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                    continue;
                }
                let rest = src[at + prefix.len()..].trim_start_matches('{');
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if src[at + prefix.len()..].starts_with("{{") && !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Every name a template or templated string mentions (a superset of the
    /// variables it uses: words of its `{{ }}` are taken whole).
    pub fn mentioned_names(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for src in self.sources.values() {
            for expr in src.split("{{").skip(1).filter_map(|p| p.split("}}").next()) {
                out.extend(
                    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        out
    }

    /// The variables as a rendering context. Building one copies every
    /// variable, so a host's context is built once and reused for its tasks.
    pub fn context(vars: &Map<String, Value>) -> Context {
        Context::wraps(vars).expect("a JSON map is a valid context")
    }

    pub fn render_text(&self, text: &Text, vars: &Map<String, Value>) -> Result<String, LangError> {
        self.render_text_in(text, &Templates::context(vars))
    }

    pub fn render_text_in(&self, text: &Text, ctx: &Context) -> Result<String, LangError> {
        match &text.id {
            None => Ok(text.raw.clone()),
            Some(id) => self.hb.render_with_context(id, ctx).map_err(|e| {
                let place = id.rsplit_once('#').map(|(p, _)| p).unwrap_or(id);
                describe(&e, &text.raw, ctx).at(&format!(
                    "{place}: in `{}`",
                    crate::terminal::one_line(&text.raw)
                ))
            }),
        }
    }

    pub fn render_file(&self, name: &str, vars: &Map<String, Value>) -> Result<String, LangError> {
        self.render_file_in(name, &Templates::context(vars))
    }

    pub fn render_file_in(&self, name: &str, ctx: &Context) -> Result<String, LangError> {
        self.hb.render_with_context(name, ctx).map_err(|e| {
            let (line, col) = (e.line_no.unwrap_or(1), e.column_no.unwrap_or(1));
            let source = self.sources.get(name).map_or("", String::as_str);
            describe(&e, source, ctx).at(&format!("{name}:{line}:{col}"))
        })
    }
}

fn describe(e: &RenderError, source: &str, ctx: &Context) -> LangError {
    let undefined = |var: &str| LangError::Undefined {
        var: var.to_owned(),
        message: format!("variable `{var}` is not defined"),
    };
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => undefined(path),
        RenderErrorReason::ParamNotFoundForIndex(..)
        | RenderErrorReason::ParamNotFoundForName(..) => {
            match missing_in_expression(source, e.line_no, e.column_no, ctx) {
                Some(var) => undefined(&var),
                None => LangError::Invalid(e.reason().to_string()),
            }
        }
        other => LangError::Invalid(other.to_string()),
    }
}

/// The first variable of the `{{ … }}` at line:col of `source` that the
/// context does not define: in strict mode a helper's missing parameter is
/// reported by the helper's name only.
fn missing_in_expression(
    source: &str,
    line: Option<usize>,
    column: Option<usize>,
    ctx: &Context,
) -> Option<String> {
    const WORDS: &[&str] = &[
        "if", "unless", "each", "with", "else", "eq", "ne", "lt", "lte", "gt", "gte", "and", "or",
        "not", "len", "lookup", "json", "this", "true", "false", "null",
    ];
    let text = source.lines().nth(line.unwrap_or(1).saturating_sub(1))?;
    let text = text
        .get(column.unwrap_or(1).saturating_sub(1)..)
        .unwrap_or(text);
    let expression = text.split("}}").next()?;
    let vars = ctx.data().as_object()?;
    expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .filter(|w| !WORDS.contains(w))
        .find(|w| !vars.contains_key(w.split('.').next().unwrap_or(w)))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Map<String, Value> {
        json!({"name": "a<b>&c", "token": "x: #y", "list": ["p", "q"]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn renders_without_escaping_and_refuses_undefined() {
        let mut t = Templates::default();
        t.add_file(
            "roles/r/templates/a.hbs",
            "n={{name}}\n{{#each list}}- {{this}}\n{{/each}}t: {{json token}}\n",
        )
        .unwrap();
        assert_eq!(
            t.render_file("roles/r/templates/a.hbs", &vars()).unwrap(),
            "n=a<b>&c\n- p\n- q\nt: \"x: #y\"\n"
        );
        t.add_file("b.hbs", "line one\nvalue: {{nope}}\n").unwrap();
        let err = t.render_file("b.hbs", &vars()).unwrap_err();
        assert_eq!(err.undefined_var(), Some("nope"));
        let err = err.to_string();
        assert!(
            err.starts_with("b.hbs:2:8:") && err.contains("`nope` is not defined"),
            "{err}"
        );
    }

    #[test]
    fn compile_errors_name_the_place() {
        let mut t = Templates::default();
        let err = t.add_file("c.hbs", "ok\n{{#if x}}unclosed\n").unwrap_err();
        assert!(err.message.starts_with("c.hbs:"), "{}", err.message);
        let plain = t.text("task", "no braces").unwrap();
        assert!(!plain.is_template());
        let templ = t.text("task", "/etc/{{name}}").unwrap();
        assert_eq!(t.render_text(&templ, &vars()).unwrap(), "/etc/a<b>&c");
    }

    #[test]
    fn a_helper_parameter_that_is_not_defined_is_named() {
        let mut t = Templates::default();
        t.add_file("c.hbs", "a\n{{#if (eq k3s_era \"psp\")}}x{{/if}}\n")
            .unwrap();
        let err = t.render_file("c.hbs", &vars()).unwrap_err();
        assert_eq!(err.undefined_var(), Some("k3s_era"), "{err}");
        assert!(
            err.to_string().contains("`k3s_era` is not defined"),
            "{err}"
        );
    }
}
