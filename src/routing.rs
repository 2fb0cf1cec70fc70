//! Where a citizen's contact leads: a dialled USSD code (or sub-code), a called number, a
//! flashed (missed-call) number, an SMS keyword, each to a flow id. The one home of routing,
//! built from config once: channels and the dispatcher ask it, and nothing else reads the
//! config's lists of codes, numbers and keywords.
//!
//! It knows flow ids only, never flow versions (the catalog decides which version starts, and
//! that a retired flow starts nothing), and no wire format.

use crate::config::{Config, Keyword};

/// The routes of one gateway.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// (normalised code, as configured, flow id), in config order.
    codes: Vec<(String, String, String)>,
    /// (digits of the called number, flow id).
    voice_numbers: Vec<(String, String)>,
    /// The flow for calls to a number not listed.
    default_voice_flow: Option<String>,
    /// (digits of the flashed number, flow id).
    missed_call_numbers: Vec<(String, String)>,
    /// SMS keywords, matched without case on a message's first word.
    keywords: Vec<Keyword>,
}

/// `*384*12#`, `384*12` and ` *384*12# ` all compare equal.
pub fn normalize_code(code: &str) -> String {
    code.trim()
        .trim_start_matches('*')
        .trim_end_matches('#')
        .to_string()
}

/// The extra code segment dialled on top of a service code: `*713*5*2#` on service `713*5`
/// gives `2`.
pub fn sub_code(service_code: &str, dialled: &str) -> Option<String> {
    let base = normalize_code(service_code);
    let full = normalize_code(dialled);
    let rest = full.strip_prefix(&base)?.strip_prefix('*')?;
    (!rest.is_empty()).then(|| rest.to_string())
}

/// A number's digits only, so `+254 711...` and `254711...` compare equal.
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

impl Routes {
    /// The routes `config` declares.
    pub fn from_config(config: &Config) -> Routes {
        Routes {
            codes: config
                .ussd
                .service_codes
                .iter()
                .map(|c| (normalize_code(&c.code), c.code.clone(), c.flow.clone()))
                .collect(),
            voice_numbers: config
                .voice
                .numbers
                .iter()
                .map(|n| (digits(&n.number), n.flow.clone()))
                .collect(),
            default_voice_flow: config.voice.default_flow.clone(),
            missed_call_numbers: config
                .voice
                .missed_call
                .numbers
                .iter()
                .map(|n| (digits(&n.number), n.flow.clone()))
                .collect(),
            keywords: config.smpp.keywords.clone(),
        }
    }

    /// The flow of exactly this code, however it is written.
    pub fn flow_for_code(&self, code: &str) -> Option<&str> {
        let wanted = normalize_code(code);
        self.codes
            .iter()
            .find(|(normalised, _, _)| *normalised == wanted)
            .map(|(_, _, flow)| flow.as_str())
    }

    /// The flow a dial starts: the sub-code's (`*384*12*3#` on service `*384*12#` with sub-code
    /// `3`) when one is configured, else the service code's.
    pub fn flow_for_dial(&self, service_code: &str, sub_code: Option<&str>) -> Option<&str> {
        if let Some(sub) = sub_code {
            let full = format!("*{}*{sub}#", normalize_code(service_code));
            if let Some(flow) = self.flow_for_code(&full) {
                return Some(flow);
            }
        }
        self.flow_for_code(service_code)
    }

    /// The configured code a dialled string starts with (the longest), else the dialled
    /// string: `*384*12*3*1#` with `*384*12*3#` configured gives `*384*12*3#`, whose flow then
    /// starts with sub-code `1` tried first.
    pub fn service_code_for(&self, dialled: &str) -> String {
        let wanted = normalize_code(dialled);
        self.codes
            .iter()
            .filter(|(base, _, _)| {
                wanted == *base
                    || wanted
                        .strip_prefix(base.as_str())
                        .is_some_and(|rest| rest.starts_with('*'))
            })
            .max_by_key(|(base, _, _)| base.len())
            .map_or_else(|| dialled.to_string(), |(_, code, _)| code.clone())
    }

    /// The flow a call to `number` runs: the configured number's, else the default flow.
    pub fn flow_for_called(&self, number: &str) -> Option<&str> {
        let wanted = digits(number);
        self.voice_numbers
            .iter()
            .find(|(n, _)| *n == wanted)
            .map(|(_, flow)| flow.as_str())
            .or(self.default_voice_flow.as_deref())
    }

    /// The callback flow of a missed-call number, if `number` is one.
    pub fn missed_call_flow(&self, number: &str) -> Option<&str> {
        let wanted = digits(number);
        self.missed_call_numbers
            .iter()
            .find(|(n, _)| *n == wanted)
            .map(|(_, flow)| flow.as_str())
    }

    /// The keyword a message starting with `first_word` sends, if any.
    pub fn keyword(&self, first_word: &str) -> Option<&Keyword> {
        self.keywords
            .iter()
            .find(|k| k.keyword.eq_ignore_ascii_case(first_word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let mut config = Config::embedded();
        config.voice.numbers = vec![crate::config::VoiceNumber {
            number: "+254205000000".into(),
            flow: "grievance".into(),
        }];
        config.voice.missed_call.numbers = vec![crate::config::VoiceNumber {
            number: "+254205550000".into(),
            flow: "grievance".into(),
        }];
        Routes::from_config(&config)
    }

    #[test]
    fn codes_route_however_they_are_written_sub_codes_first() {
        let r = routes();
        assert_eq!(r.flow_for_code("*384*12*3#"), Some("grievance"));
        assert_eq!(r.flow_for_code(" 384*12 "), Some("community_needs"));
        assert_eq!(r.flow_for_code("*999#"), None);
        assert_eq!(
            r.flow_for_dial("*384*12#", Some("2")),
            Some("service_feedback")
        );
        assert_eq!(
            r.flow_for_dial("*384*12#", Some("9")),
            Some("community_needs")
        );
        assert_eq!(r.flow_for_dial("*384*12#", None), Some("community_needs"));
        assert_eq!(r.service_code_for("*384*12*3*1#"), "*384*12*3#");
        assert_eq!(r.service_code_for("*384*12*9#"), "*384*12#");
        assert_eq!(r.service_code_for("*384*1#"), "*384*1#");
        assert_eq!(sub_code("713*5", "*713*5*2#").as_deref(), Some("2"));
        assert_eq!(sub_code("*713*5#", "*713*5#"), None);
        assert_eq!(sub_code("*713*5#", "*713*55#"), None);
    }

    #[test]
    fn numbers_and_keywords_route_by_digits_and_without_case() {
        let r = routes();
        assert_eq!(r.flow_for_called("254205000000"), Some("grievance"));
        assert_eq!(
            r.flow_for_called("+254 20 5000001"),
            Some("service_feedback")
        );
        assert_eq!(r.missed_call_flow("+254-205-550000"), Some("grievance"));
        assert_eq!(r.missed_call_flow("+254205000000"), None);
        assert_eq!(
            r.keyword("afya").map(|k| k.flow.as_str()),
            Some("service_feedback")
        );
        assert!(r.keyword("HELLO").is_none());
    }
}
