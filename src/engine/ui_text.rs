//! Built-in interface texts the gateway adds around a flow's own words ("More", "Sorry, ...").
//!
//! English, Swahili and French are built in; a flow may override any of them under `ui:`.
//! Lookup falls back to the flow's default language, then English. Pure data, no I/O.

use crate::flow::model::{Flow, Text, UiKey};

/// The built-in text for `key` in `lang`, if the gateway has one in that language.
fn builtin(key: UiKey, lang: &str) -> Option<&'static str> {
    use UiKey::*;
    let text = match (key, lang) {
        (More, "en") => "More",
        (More, "sw") => "Zaidi",
        (More, "fr") => "Suite",
        (Back, "en") => "Back",
        (Back, "sw") => "Rudi",
        (Back, "fr") => "Retour",
        (Skip, "en") => "Skip",
        (Skip, "sw") => "Ruka",
        (Skip, "fr") => "Passer",
        (Yes, "en") => "Yes",
        (Yes, "sw") => "Ndiyo",
        (Yes, "fr") => "Oui",
        (No, "en") => "No",
        (No, "sw") => "Hapana",
        (No, "fr") => "Non",
        (InvalidChoice, "en") => "Sorry, that is not one of the choices.",
        (InvalidChoice, "sw") => "Samahani, hilo si mojawapo ya machaguo.",
        (InvalidChoice, "fr") => "Desole, ce n'est pas un des choix.",
        (InvalidNumber, "en") => "Sorry, please enter a number from {{ min }} to {{ max }}.",
        (InvalidNumber, "sw") => "Samahani, weka namba kati ya {{ min }} na {{ max }}.",
        (InvalidNumber, "fr") => "Desole, entrez un nombre de {{ min }} a {{ max }}.",
        (InvalidDate, "en") => "Sorry, please enter a date like 25/12/1990.",
        (InvalidDate, "sw") => "Samahani, weka tarehe kama 25/12/1990.",
        (InvalidDate, "fr") => "Desole, entrez une date comme 25/12/1990.",
        (InvalidText, "en") => "Sorry, please write an answer of at most {{ max }} characters.",
        (InvalidText, "sw") => "Samahani, andika jibu lisilozidi herufi {{ max }}.",
        (InvalidText, "fr") => "Desole, ecrivez une reponse de {{ max }} caracteres au plus.",
        (TooManyAttempts, "en") => {
            "Sorry, we could not understand your answers. Please try again later. Goodbye."
        }
        (TooManyAttempts, "sw") => {
            "Samahani, hatukuelewa majibu yako. Tafadhali jaribu tena baadaye. Kwaheri."
        }
        (TooManyAttempts, "fr") => {
            "Desole, nous n'avons pas compris vos reponses. Reessayez plus tard. Au revoir."
        }
        (ResumePrompt, "en") => "You have an unfinished survey.",
        (ResumePrompt, "sw") => "Una utafiti ambao hukuumaliza.",
        (ResumePrompt, "fr") => "Vous avez un questionnaire inacheve.",
        (ResumeContinue, "en") => "Continue where you left off",
        (ResumeContinue, "sw") => "Endelea ulipoishia",
        (ResumeContinue, "fr") => "Reprendre ou vous etiez",
        (ResumeRestart, "en") => "Start again",
        (ResumeRestart, "sw") => "Anza upya",
        (ResumeRestart, "fr") => "Recommencer",
        (SmsReplyHint, "en") => "Reply {{ keys }}",
        (SmsReplyHint, "sw") => "Jibu {{ keys }}",
        (SmsReplyHint, "fr") => "Repondez {{ keys }}",
        (Or, "en") => "or",
        (Or, "sw") => "au",
        (Or, "fr") => "ou",
        (VoicePress, "en") => "For {{ label }}, press {{ key }}.",
        (VoicePress, "sw") => "Kwa {{ label }}, bonyeza {{ key }}.",
        (VoicePress, "fr") => "Pour {{ label }}, tapez {{ key }}.",
        (VoiceFinishHash, "en") => "Then press the hash key.",
        (VoiceFinishHash, "sw") => "Kisha bonyeza kitufe cha reli.",
        (VoiceFinishHash, "fr") => "Puis appuyez sur la touche diese.",
        (Reminder, "en") => "Reminder:",
        (Reminder, "sw") => "Kumbusho:",
        (Reminder, "fr") => "Rappel :",
        (TimedOut, "en") => "Your session has ended. Thank you.",
        (TimedOut, "sw") => "Muda wako umekwisha. Asante.",
        (TimedOut, "fr") => "Votre session est terminee. Merci.",
        (NoInput, "en") => "Sorry, we did not hear an answer.",
        (NoInput, "sw") => "Samahani, hatukusikia jibu.",
        (NoInput, "fr") => "Desole, nous n'avons pas entendu de reponse.",
        (VoiceBack, "en") => "To go back, press {{ key }}.",
        (VoiceBack, "sw") => "Kurudi nyuma, bonyeza {{ key }}.",
        (VoiceBack, "fr") => "Pour revenir en arriere, tapez {{ key }}.",
        _ => return None,
    };
    Some(text)
}

/// The text for `key` in `lang` for this flow: the flow's override, else the built-in one.
/// Returns the raw template (it may contain `{{ min }}` and the like).
pub fn raw<'a>(flow: &'a Flow, key: UiKey, lang: &str) -> &'a str {
    if let Some(text) = flow.ui.texts.get(&key)
        && text.has(lang)
    {
        return text.get(lang, &flow.default_language);
    }
    builtin(key, lang)
        .or_else(|| {
            flow.ui
                .texts
                .get(&key)
                .map(|t| t.get(lang, &flow.default_language))
        })
        .or_else(|| builtin(key, &flow.default_language))
        .or_else(|| builtin(key, "en"))
        .unwrap_or("")
}

/// Every interface key, for compiling templates up front.
pub const ALL_KEYS: [UiKey; 21] = [
    UiKey::More,
    UiKey::Back,
    UiKey::Skip,
    UiKey::Yes,
    UiKey::No,
    UiKey::InvalidChoice,
    UiKey::InvalidNumber,
    UiKey::InvalidDate,
    UiKey::InvalidText,
    UiKey::TooManyAttempts,
    UiKey::ResumePrompt,
    UiKey::ResumeContinue,
    UiKey::ResumeRestart,
    UiKey::SmsReplyHint,
    UiKey::Or,
    UiKey::VoicePress,
    UiKey::VoiceFinishHash,
    UiKey::Reminder,
    UiKey::TimedOut,
    UiKey::NoInput,
    UiKey::VoiceBack,
];

/// Whether the gateway ships a built-in translation of every interface text for `lang`.
pub fn has_builtin_language(lang: &str) -> bool {
    ALL_KEYS.iter().all(|k| builtin(*k, lang).is_some())
}

/// Text helper for checkers and tests: a built-in or overridden text as a `Text`.
pub fn as_text(flow: &Flow, key: UiKey) -> Text {
    Text::PerLanguage(
        flow.languages
            .iter()
            .map(|l| (l.clone(), raw(flow, key, l).to_string()))
            .collect(),
    )
}
