//! Templated texts: every text of a flow compiled once with tera, rendered per step.
//!
//! Texts without `{{`/`{%` skip tera entirely. Rendering never fails the step: a text whose
//! variable is missing at run time (the checker prevents this for answers) is shown with the
//! template markup removed rather than as an error, because a citizen must never see one.
//! No I/O, no clock: tera is used without its optional features (no `now()`, no random).

use std::collections::{BTreeMap, HashMap};

use tera::{Context, Tera};

use crate::engine::ui_text;
use crate::flow::model::{Flow, Node, Text};

/// All templated texts of one flow version, compiled.
pub struct Templates {
    tera: Tera,
    /// Template source -> its name inside `tera`.
    names: HashMap<String, String>,
}

/// A text that tera could not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("template `{text}` does not parse: {message}")]
pub struct TemplateError {
    pub text: String,
    pub message: String,
}

/// Variables available while rendering one text.
pub struct Vars<'a> {
    pub answers: &'a BTreeMap<String, String>,
    /// Labels of the answers, in the respondent's language.
    pub labels: BTreeMap<&'a str, String>,
    pub contact: &'a BTreeMap<String, String>,
    pub flow_name: &'a str,
    pub reference: &'a str,
    /// Interface-text variables (`min`, `max`, `keys`, `label`, `key`).
    pub extra: Vec<(&'static str, String)>,
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

impl Templates {
    /// Compiles every text of the flow, and the interface texts in every declared language.
    pub fn compile(flow: &Flow) -> Result<Templates, Vec<TemplateError>> {
        let mut sources: Vec<String> = Vec::new();
        let add_text = |t: &Text, out: &mut Vec<String>| {
            for (_, s) in t.variants() {
                if is_template(s) {
                    out.push(s.to_string());
                }
            }
        };
        add_text(&flow.name, &mut sources);
        for node in flow.nodes.values() {
            if let Some(p) = node.prompt() {
                add_text(&p.text, &mut sources);
            }
            match node {
                Node::Menu(m) => {
                    for o in &m.options {
                        add_text(&o.label, &mut sources);
                    }
                    if let Some(t) = &m.retry.invalid {
                        add_text(t, &mut sources);
                    }
                }
                Node::Question(q) => {
                    if let Some(t) = &q.retry.invalid {
                        add_text(t, &mut sources);
                    }
                }
                Node::Language(l) => {
                    if let Some(t) = &l.retry.invalid {
                        add_text(t, &mut sources);
                    }
                }
                Node::Message(_) | Node::Branch(_) | Node::End(_) => {}
            }
        }
        for key in ui_text::ALL_KEYS {
            for lang in flow
                .languages
                .iter()
                .chain(std::iter::once(&flow.default_language))
            {
                let s = ui_text::raw(flow, key, lang);
                if is_template(s) {
                    sources.push(s.to_string());
                }
            }
        }
        let mut tera = Tera::new();
        // Plain text for phones: no HTML escaping whatever the name.
        tera.autoescape_on(Vec::<&str>::new());
        let mut names = HashMap::new();
        let mut errors = Vec::new();
        for source in sources {
            if names.contains_key(&source) {
                continue;
            }
            let name = format!("t{}", names.len());
            match tera.add_raw_template(&name, &source) {
                Ok(()) => {
                    names.insert(source, name);
                }
                Err(e) => errors.push(TemplateError {
                    text: source.clone(),
                    message: error_chain(&e),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Templates { tera, names })
        } else {
            Err(errors)
        }
    }

    /// Renders `source` (a text of this flow) with `vars`.
    pub fn render(&self, source: &str, vars: &Vars<'_>) -> String {
        if !is_template(source) {
            return source.to_string();
        }
        let Some(name) = self.names.get(source) else {
            return strip_markup(source);
        };
        let mut ctx = Context::new();
        ctx.insert("answers", vars.answers);
        ctx.insert("labels", &vars.labels);
        ctx.insert("contact", vars.contact);
        let mut flow = BTreeMap::new();
        flow.insert("name", vars.flow_name);
        ctx.insert("flow", &flow);
        let mut session = BTreeMap::new();
        session.insert("reference", vars.reference);
        ctx.insert("session", &session);
        for (k, v) in &vars.extra {
            ctx.insert(*k, v);
        }
        match self.tera.render(name, &ctx) {
            Ok(s) => s,
            Err(_) => strip_markup(source),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The text with `{{ ... }}` and `{% ... %}` removed: the last resort when rendering fails.
pub fn strip_markup(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    loop {
        let next = [rest.find("{{"), rest.find("{%")]
            .into_iter()
            .flatten()
            .min();
        let Some(start) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..start]);
        let closing = if rest[start..].starts_with("{{") {
            "}}"
        } else {
            "%}"
        };
        match rest[start + 2..].find(closing) {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => break,
        }
    }
    // Collapse the double spaces a removed variable leaves behind.
    let mut collapsed = String::with_capacity(out.len());
    for word in out.split(' ').filter(|w| !w.is_empty()) {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(word);
    }
    collapsed
}
