//! One file per node kind: how it builds its screen and what it makes of an answer.
//!
//! Adding a node kind to `flow::model::Node` makes the compiler point at `engine::mod`'s
//! matches; its behaviour lives in a new file here. No I/O.
//!
//! A node's screen is built from its texts through a [`Fill`]: the engine fills them with a
//! session's values, the checker (`flow::check`) with the longest values they can take, so
//! both measure the same screen, built by the same code.

pub mod branch;
pub mod end;
pub mod language;
pub mod menu;
pub mod message;
pub mod question;

use crate::engine::screen::{Line, Screen};
use crate::flow::model::{Flow, Node, Prompt, UiKey};

/// Fills a flow's texts for one screen.
pub trait Fill {
    /// The language the screen is shown in.
    fn language(&self) -> &str;
    /// One text of the flow, already in the screen's language, its variables filled.
    fn text(&self, source: &str) -> String;
    /// An interface text (yes, no, skip...) in the screen's language, filled.
    fn ui(&self, key: UiKey) -> String;
}

/// The screen of a node that waits for an answer (menu, question, language) or ends the
/// session, after `lead` lines; `None` for a message or a branch (they wait for nothing).
pub fn screen(flow: &Flow, node: &Node, lead: Vec<Line>, fill: &impl Fill) -> Option<Screen> {
    Some(match node {
        Node::Menu(m) => menu::screen(flow, m, lead, fill),
        Node::Question(q) => question::screen(flow, q, lead, fill),
        Node::Language(l) => language::screen(flow, l, lead, fill),
        Node::End(e) => end::screen(flow, e, lead, fill),
        Node::Message(_) | Node::Branch(_) => return None,
    })
}

/// A prompt's line in the screen's language: its text filled, its recording if it has one.
pub fn line(flow: &Flow, prompt: &Prompt, fill: &impl Fill) -> Line {
    let language = fill.language();
    Line {
        text: fill.text(prompt.text.get(language, &flow.default_language)),
        audio: prompt.audio.get(language).cloned(),
    }
}
