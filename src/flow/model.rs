//! The flow format: the Rust types a `flows/*.yaml` file deserializes into.
//!
//! These types are the single source of truth for the format: serde reads them, `schemars`
//! generates `flows/schema.json` from them, and the checker walks them. They hold data only;
//! they never run a flow (that is `engine`) and never judge one (that is `flow::check`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Language code as written in the flow (`en`, `sw`, `fr`, ...).
pub type Lang = String;
/// Name of a node inside one flow.
pub type NodeId = String;

/// One survey or feedback flow, as written by a campaign manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Stable identifier: results, service codes and keywords refer to the flow by it.
    pub id: String,
    /// Bumped on every published change; a session finishes on the version it started with.
    pub version: u32,
    /// Human name, shown to respondents through `{{ flow.name }}` and to managers in exports.
    pub name: Text,
    /// Every language the flow speaks; each text must have a translation for each of them.
    pub languages: Vec<Lang>,
    /// Language used until the respondent chooses one (and for labels in exports).
    pub default_language: Lang,
    /// How long an idle session stays open (USSD aggregators drop sessions after ~180 s).
    #[serde(default = "Seconds::default_session_timeout")]
    pub session_timeout: Seconds,
    /// How long after a drop a respondent may continue where they left off.
    #[serde(default = "Seconds::default_resume_window")]
    pub resume_window: Seconds,
    /// The node a new session starts on.
    pub start: NodeId,
    /// USSD rendering settings (screen size, pagination keys).
    #[serde(default)]
    pub ussd: UssdOptions,
    /// SMS settings (timeouts are longer: people answer texts hours later).
    #[serde(default)]
    pub sms: SmsOptions,
    /// Voice menu settings (keypad conventions, text-to-speech permission).
    #[serde(default)]
    pub voice: VoiceOptions,
    /// Overrides for the gateway's built-in interface texts ("More", "Back", "Sorry, ...").
    #[serde(default)]
    pub ui: UiTexts,
    /// The flow's steps by name, in the order they were written.
    pub nodes: IndexMap<NodeId, Node>,
}

/// One step of a flow. Adding a kind here makes the compiler list every place to update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    /// Say something and go on without waiting for an answer.
    Message(MessageNode),
    /// Numbered choices, each leading somewhere.
    Menu(MenuNode),
    /// A free answer: text, number, yes/no or date.
    Question(QuestionNode),
    /// Route on earlier answers and contact attributes; shows nothing.
    Branch(BranchNode),
    /// Let the respondent choose the language of the rest of the flow.
    Language(LanguageNode),
    /// Final message; the session ends here.
    End(EndNode),
}

/// The kind of a node, for messages and tables that need no node contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Message,
    Menu,
    Question,
    Branch,
    Language,
    End,
}

impl Node {
    pub fn kind(&self) -> NodeKind {
        match self {
            Node::Message(_) => NodeKind::Message,
            Node::Menu(_) => NodeKind::Menu,
            Node::Question(_) => NodeKind::Question,
            Node::Branch(_) => NodeKind::Branch,
            Node::Language(_) => NodeKind::Language,
            Node::End(_) => NodeKind::End,
        }
    }

    /// The prompt this node shows, if it shows one (branches show nothing).
    pub fn prompt(&self) -> Option<&Prompt> {
        match self {
            Node::Message(n) => Some(&n.prompt),
            Node::Menu(n) => Some(&n.prompt),
            Node::Question(n) => Some(&n.prompt),
            Node::Language(n) => Some(&n.prompt),
            Node::End(n) => Some(&n.prompt),
            Node::Branch(_) => None,
        }
    }

    /// The result name this node saves its answer under, if any.
    pub fn result(&self) -> Option<&str> {
        match self {
            Node::Menu(n) => Some(&n.result),
            Node::Question(n) => Some(&n.result),
            Node::Language(n) => n.result.as_deref(),
            Node::Message(_) | Node::Branch(_) | Node::End(_) => None,
        }
    }

    /// Every node this node can lead to, with the field that names it (for the checker).
    pub fn targets(&self) -> Vec<(String, &NodeId)> {
        let mut out = Vec::new();
        match self {
            Node::Message(n) => out.push(("next".to_string(), &n.next)),
            Node::Menu(n) => {
                for (i, o) in n.options.iter().enumerate() {
                    out.push((format!("options[{i}].next"), &o.next));
                }
                if let Some(f) = &n.retry.fallback {
                    out.push(("fallback".to_string(), f));
                }
            }
            Node::Question(n) => {
                out.push(("next".to_string(), &n.next));
                if let Some(f) = &n.retry.fallback {
                    out.push(("fallback".to_string(), f));
                }
            }
            Node::Branch(n) => {
                for (i, r) in n.rules.iter().enumerate() {
                    out.push((format!("rules[{i}].next"), &r.next));
                }
                out.push(("default".to_string(), &n.default));
            }
            Node::Language(n) => {
                out.push(("next".to_string(), &n.next));
                if let Some(f) = &n.retry.fallback {
                    out.push(("fallback".to_string(), f));
                }
            }
            Node::End(_) => {}
        }
        out
    }
}

/// What a node shows or says: the text, and optionally a recording per language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The words, one string or one per language; may use `{{ answers.x }}`, `{{ labels.x }}`,
    /// `{{ contact.x }}`, `{{ flow.name }}` and `{{ session.reference }}`.
    pub text: Text,
    /// Recorded audio file per language, relative to the configured audio folder; the voice
    /// channel plays it instead of reading the text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audio: BTreeMap<Lang, String>,
}

/// What happens after invalid answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Shown before the re-prompt after an invalid answer; a built-in text otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Text>,
    /// Invalid answers allowed before giving up on this node (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u8>,
    /// Where to go after too many invalid answers; without one, the session ends politely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<NodeId>,
}

impl RetryPolicy {
    pub const DEFAULT_RETRIES: u8 = 2;
    pub fn retries(&self) -> u8 {
        self.retries.unwrap_or(Self::DEFAULT_RETRIES)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageNode {
    #[serde(flatten)]
    pub prompt: Prompt,
    /// The node shown right after this message (on USSD, on the same screen).
    pub next: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuNode {
    #[serde(flatten)]
    pub prompt: Prompt,
    /// Result name the chosen option is saved under.
    pub result: String,
    /// The choices, numbered 1, 2, 3... unless an option sets its own key.
    pub options: Vec<MenuOption>,
    #[serde(flatten)]
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuOption {
    /// The key the respondent presses; defaults to the option's position (1, 2, 3...).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string"
    )]
    pub key: Option<String>,
    /// Stable value stored and exported (e.g. `water`); defaults to the key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string"
    )]
    pub value: Option<String>,
    /// What the respondent sees or hears.
    pub label: Text,
    /// Where this choice leads.
    pub next: NodeId,
    /// Recorded label per language, for voice menus ("For water, press 1").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audio: BTreeMap<Lang, String>,
}

impl MenuNode {
    /// The key of option `index`: its own key, or its 1-based position.
    pub fn key_of(&self, index: usize) -> Cow<'_, str> {
        match &self.options[index].key {
            Some(k) => Cow::Borrowed(k.as_str()),
            None => Cow::Owned((index + 1).to_string()),
        }
    }

    /// The stored value of option `index`: its own value, or its key.
    pub fn value_of(&self, index: usize) -> Cow<'_, str> {
        match &self.options[index].value {
            Some(v) => Cow::Borrowed(v.as_str()),
            None => self.key_of(index),
        }
    }
}

/// What a question accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerType {
    /// Any text (trimmed; `max_length` applies).
    #[default]
    Text,
    /// A number, within `min`..=`max` when given.
    Number,
    /// Yes or no, offered as 1 and 2.
    YesNo,
    /// A calendar date, typed as DD/MM/YYYY (also DD-MM-YYYY, DDMMYYYY or YYYY-MM-DD).
    Date,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionNode {
    #[serde(flatten)]
    pub prompt: Prompt,
    /// Result name the answer is saved under.
    pub result: String,
    /// What the question accepts (default `text`).
    #[serde(default)]
    pub answer: AnswerType,
    /// Smallest accepted number (`answer: number` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest accepted number (`answer: number` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whether decimals are accepted (`answer: number` only; default whole numbers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decimals: bool,
    /// Longest accepted text (`answer: text` only; default 160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u16>,
    /// Whether the respondent may skip it with the skip key (the result is then not set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// On voice, record the spoken answer instead of reading keys (`answer: text` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record: bool,
    /// The node after a valid answer (or a skip).
    pub next: NodeId,
    #[serde(flatten)]
    pub retry: RetryPolicy,
}

impl QuestionNode {
    pub const DEFAULT_MAX_LENGTH: u16 = 160;
    pub fn max_length(&self) -> usize {
        usize::from(self.max_length.unwrap_or(Self::DEFAULT_MAX_LENGTH))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchNode {
    /// Checked in order; the first rule whose condition holds decides.
    pub rules: Vec<Rule>,
    /// Where to go when no rule holds.
    pub default: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub when: Condition,
    pub next: NodeId,
}

/// A simple test on one earlier answer or one contact attribute.
///
/// Exactly one of `result` / `contact`, and exactly one test: `equals`, `one_of`, or a range
/// (`min` and/or `max`, inclusive). A missing value never matches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Test an earlier answer, by result name (its stored value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Test a contact attribute known before the session (e.g. `district`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Holds when the value is exactly this (`equals: 1` and `equals: "1"` are the same).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string"
    )]
    pub equals: Option<String>,
    /// Holds when the value is any of these.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_strings"
    )]
    pub one_of: Option<Vec<String>>,
    /// Holds when the value is a number at least this (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Holds when the value is a number at most this (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageNode {
    #[serde(flatten)]
    pub prompt: Prompt,
    /// The languages offered, in order (numbered 1, 2, ...); each must be declared.
    pub options: Vec<LanguageOption>,
    /// Optional result name the chosen language code is saved under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub next: NodeId,
    #[serde(flatten)]
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageOption {
    pub language: Lang,
    /// The language's own name, written in that language (`Kiswahili`).
    pub label: String,
    /// Recorded label, for voice menus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndNode {
    #[serde(flatten)]
    pub prompt: Prompt,
}

/// USSD rendering settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UssdOptions {
    /// Key that shows the next page of a long screen.
    pub more_key: String,
    /// Key that shows the previous page.
    pub back_key: String,
    /// Key that skips an optional question.
    pub skip_key: String,
    /// Lower screen limit for networks that cut earlier than 182 GSM-7 / 80 UCS-2 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u16>,
}

impl Default for UssdOptions {
    fn default() -> Self {
        UssdOptions {
            more_key: "98".into(),
            back_key: "0".into(),
            skip_key: "00".into(),
            max_chars: None,
        }
    }
}

/// SMS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SmsOptions {
    /// How long an SMS session waits for a reply.
    pub session_timeout: Seconds,
    /// Send one reminder of an unanswered question after this long (none when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminder_after: Option<Seconds>,
    /// Word that skips an optional question by SMS.
    pub skip_word: String,
}

impl Default for SmsOptions {
    fn default() -> Self {
        SmsOptions {
            session_timeout: Seconds(24 * 3600),
            reminder_after: Some(Seconds(4 * 3600)),
            skip_word: "SKIP".into(),
        }
    }
}

/// Voice menu settings: keypad conventions and text-to-speech permission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceOptions {
    /// Key that plays the current prompt again.
    pub repeat_key: String,
    /// Key that goes back to the previous question and asks it again. It works (and the
    /// prompt offers it) only where the key cannot be an answer: on menus without that key, on
    /// yes/no and language choices, on dates, and on numbers whose range leaves it out; an
    /// optional question's skip key wins over it.
    pub back_key: String,
    /// Key that skips an optional question.
    pub skip_key: String,
    /// Seconds to wait for a key press before re-prompting.
    pub input_timeout: u8,
    /// Languages for which the provider's text-to-speech may read a prompt that has no recording.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tts_languages: Vec<Lang>,
}

impl Default for VoiceOptions {
    fn default() -> Self {
        VoiceOptions {
            repeat_key: "*".into(),
            back_key: "0".into(),
            skip_key: "0".into(),
            input_timeout: 8,
            tts_languages: Vec::new(),
        }
    }
}

/// Overrides for the built-in interface texts; see `engine::ui_text` for the defaults.
// No `deny_unknown_fields` here: it does not work together with `flatten`, and an unknown key
// is refused anyway, because it does not name a `UiKey`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct UiTexts {
    #[serde(flatten)]
    pub texts: BTreeMap<UiKey, Text>,
}

/// Every interface text the gateway adds around a flow's own words.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UiKey {
    /// Label of the next-page key on a paginated USSD screen.
    More,
    /// Label of the previous-page key.
    Back,
    /// Label of the skip key for optional questions.
    Skip,
    Yes,
    No,
    /// After an invalid menu choice.
    InvalidChoice,
    /// After an invalid number; may use `{{ min }}` and `{{ max }}`.
    InvalidNumber,
    /// After an invalid date.
    InvalidDate,
    /// After an empty or too long text.
    InvalidText,
    /// Ends the session after too many invalid answers (no fallback).
    TooManyAttempts,
    /// Offered when a dropped session can be resumed.
    ResumePrompt,
    ResumeContinue,
    ResumeRestart,
    /// SMS reply hint; `{{ keys }}` lists the keys ("1, 2 or 3").
    SmsReplyHint,
    /// The word between the last two keys of a list ("or").
    Or,
    /// Voice menu line; `{{ label }}` and `{{ key }}`.
    VoicePress,
    /// Voice hint for numbers and dates: "then press the hash key".
    VoiceFinishHash,
    /// Reminder prefix for an unanswered SMS question.
    Reminder,
    /// Said when a session ends because it timed out or the answer came too late.
    TimedOut,
    /// Said before the question again when a voice caller pressed nothing in time.
    NoInput,
    /// Voice line offering the back key; `{{ key }}`.
    VoiceBack,
}

/// A text: one string for every language, or one per language.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    One(String),
    PerLanguage(BTreeMap<Lang, String>),
}

impl Text {
    /// The text in `lang`, falling back to `fallback`, then to any translation.
    pub fn get<'a>(&'a self, lang: &str, fallback: &str) -> &'a str {
        match self {
            Text::One(s) => s,
            Text::PerLanguage(m) => m
                .get(lang)
                .or_else(|| m.get(fallback))
                .or_else(|| m.values().next())
                .map(String::as_str)
                .unwrap_or(""),
        }
    }

    /// Whether a translation for `lang` is written (a single string covers every language).
    pub fn has(&self, lang: &str) -> bool {
        match self {
            Text::One(_) => true,
            Text::PerLanguage(m) => m.contains_key(lang),
        }
    }

    /// Every written variant, with its language (`None` for a single string).
    pub fn variants(&self) -> Vec<(Option<&str>, &str)> {
        match self {
            Text::One(s) => vec![(None, s.as_str())],
            Text::PerLanguage(m) => m
                .iter()
                .map(|(l, s)| (Some(l.as_str()), s.as_str()))
                .collect(),
        }
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::One(t) => s.serialize_str(t),
            Text::PerLanguage(m) => m.serialize(s),
        }
    }
}

// Hand-written rather than `#[serde(untagged)]`: untagged buffers the value and loses the
// YAML position and the precise message ("expected a string or a map of language to text").
impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a text, or a map of language code to text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::One(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text::One(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text::One(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text::One(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text::One(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format!("language `{k}` is given twice")));
                    }
                }
                Ok(Text::PerLanguage(out))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "One text for every language, or a map of language code to text.",
            "oneOf": [
                { "type": "string" },
                { "type": "object", "additionalProperties": { "type": "string" } }
            ]
        })
    }
}

/// A duration: whole seconds, or a string such as `90s`, `3m`, `24h`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u64);

impl Seconds {
    fn default_session_timeout() -> Seconds {
        Seconds(180)
    }
    fn default_resume_window() -> Seconds {
        Seconds(24 * 3600)
    }
    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Parses `90`, `90s`, `3m`, `24h` or `2d`.
    pub fn parse(s: &str) -> Result<Seconds, String> {
        let s = s.trim();
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "s"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (write e.g. 90s, 3m, 24h, 2d)"))?;
        let mult = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{s}` (use s, m, h or d)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Seconds)
            .ok_or_else(|| format!("duration `{s}` is too large"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s.is_multiple_of(86400) {
            write!(f, "{}d", s / 86400)
        } else if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl<'de> Visitor<'de> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 180s, 3m, 24h or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                Seconds::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(SecondsVisitor)
    }
}

impl JsonSchema for Seconds {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: whole seconds, or a number with a unit s, m, h or d (180s, 3m, 24h).",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+ ?[smhd]?$" }
            ]
        })
    }
}

/// Deserializers for keys and values that campaign managers write unquoted (`key: 7`,
/// `equals: 1`). Inside a `type:`-tagged node serde has already buffered the value as a number,
/// so a plain `String` field would refuse it.
mod lenient {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, SeqAccess, Visitor};

    struct Scalar;
    impl<'de> Visitor<'de> for Scalar {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a text or a number")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    struct OneScalar(String);
    impl<'de> de::Deserialize<'de> for OneScalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Scalar).map(OneScalar)
        }
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(Scalar).map(Some)
    }

    pub fn opt_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of texts or numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(OneScalar(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(List).map(Some)
    }
}
