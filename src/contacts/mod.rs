//! The contact list: one contact per citizen, keyed by the number in E.164, with the fields
//! the config declares; imports from CSV files, segments, export and consent.
//!
//! This module is the one place that reads numbers and field values written by people
//! (`0712 345 678`, `Mwanamke`, `12/03/1990`) and turns them into their one stored form:
//! [`ContactSchema`] is built once from the config's `contacts:` section and checks and
//! normalises every value before anything reaches the result store, which owns the SQL.
//!
//! It never logs a number, a name or a field value (errors name the line and the field, and a
//! number only by its country), and never sends anything: whoever sends asks
//! [`consent::Consent::is_opted_out`] first.

pub mod command;
pub mod consent;
pub mod dates;
pub mod export;
pub mod import;
pub mod segment;

use std::collections::BTreeMap;

use phonenumber::country;

use crate::config::{ContactsConfig, FieldKind};
use crate::result_store::ConsentStatus;
pub use crate::result_store::ContactRecord as Contact;

/// Why the `contacts:` config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("contacts.{what}: `{code}` is not a country code (use ISO 3166 letters such as KE)")]
    UnknownRegion { what: &'static str, code: String },
    #[error(
        "contacts: field name `{0}` must be lowercase letters, digits and underscores, starting with a letter"
    )]
    BadFieldName(String),
    #[error("contacts: field `{0}` is declared twice, or clashes with a built-in field or alias")]
    DuplicateField(String),
    #[error("contacts.custom_fields.{0}: a choice field needs `choices`")]
    NoChoices(String),
    #[error("contacts.custom_fields.{0}: only a choice field takes `choices`")]
    ChoicesNotAllowed(String),
    #[error("contacts.column_aliases: `{alias}` names `{field}`, which is not a contact field")]
    AliasToUnknown { alias: String, field: String },
    #[error("contacts.operators.{operator}: `{prefix}` is not a prefix like +25470")]
    BadPrefix { operator: String, prefix: String },
}

/// A contact field, as import columns, segments and counts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The phone number (the key; import only).
    Number,
    Name,
    Language,
    Channel,
    Gender,
    BirthYear,
    AgeBand,
    /// Derived from the number, never imported.
    Operator,
    /// The number's consent (an import column; `opted_in` / `opted_out` in segments).
    Consent,
    /// When the citizen last reached the gateway (segments: `last_seen_since`).
    LastSeen,
    /// A location or custom field: its position in [`ContactSchema::declared`].
    Declared(usize),
}

/// The built-in fields with their names and the header names an import also accepts
/// (compared without case, spaces, hyphens or underscores).
const BUILT_INS: &[(Field, &str, &[&str])] = &[
    (
        Field::Number,
        "number",
        &[
            "phone",
            "phone_number",
            "msisdn",
            "mobile",
            "mobile_number",
            "cell",
            "cellphone",
            "tel",
            "telephone",
            "simu",
            "namba",
            "nambari",
            "namba_ya_simu",
            "nambari_ya_simu",
        ],
    ),
    (
        Field::Name,
        "name",
        &["full_name", "names", "jina", "majina"],
    ),
    (
        Field::Language,
        "language",
        &["lang", "preferred_language", "lugha"],
    ),
    (Field::Channel, "channel", &["preferred_channel"]),
    (Field::Gender, "gender", &["sex", "jinsia"]),
    (
        Field::BirthYear,
        "birth_year",
        &["year_of_birth", "yob", "mwaka_wa_kuzaliwa"],
    ),
    (Field::AgeBand, "age_band", &["age_group", "age_range"]),
    (Field::Operator, "operator", &[]),
    (
        Field::Consent,
        "consent",
        &["opt_in", "opted_in", "ridhaa", "idhini"],
    ),
    (Field::LastSeen, "last_seen", &[]),
];

/// A location or custom field declared in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredField {
    pub name: String,
    pub kind: FieldKind,
    /// The allowed values of a choice field, as declared.
    pub choices: Vec<String>,
}

/// Why a value was refused (the line's `reason`; never quotes a number or a name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("unreadable number")]
    UnreadableNumber,
    #[error("not a valid {0} number")]
    InvalidNumber(String),
    #[error("a number of another country ({country}, +{code}) is not accepted")]
    CountryNotAccepted { country: String, code: u16 },
    #[error("a number with an extension is not a mobile number")]
    Extension,
    #[error("{field}: `{value}` is not one of {allowed}")]
    UnknownChoice {
        field: String,
        value: String,
        allowed: String,
    },
    #[error("{field}: `{value}` is not a date (write 2026-03-31 or 31/03/2026)")]
    BadDate { field: String, value: String },
    #[error("{field}: `{value}` is not a number")]
    BadNumber { field: String, value: String },
    #[error("birth_year: `{0}` is not a year between 1900 and this year")]
    BadYear(String),
    #[error("age_band: `{0}` is not an age band (write 20-24 or 35+)")]
    BadAgeBand(String),
    #[error("language: `{0}` is not a language code (write sw, en, fr...)")]
    BadLanguage(String),
    #[error("{field}: longer than {max} characters")]
    TooLong { field: String, max: usize },
    #[error("{0} cannot be imported (it is derived or recorded by the gateway)")]
    NotImportable(String),
}

/// Longest text kept in a name or text field, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// The contact list's rules, built once from config: how numbers are read, which fields
/// exist, which header names mean which field, which operator a prefix belongs to.
#[derive(Debug, Clone)]
pub struct ContactSchema {
    default_region: country::Id,
    accepted: Vec<country::Id>,
    /// Location fields first (in config order), then custom fields (by name).
    declared: Vec<DeclaredField>,
    /// Header name squashed (lowercase, no spaces, hyphens or underscores) -> field.
    columns: BTreeMap<String, Field>,
    /// (E.164 prefix, operator), longest prefix first.
    operators: Vec<(String, String)>,
}

/// A header or field name compared loosely: lowercase, without spaces, hyphens, dots or
/// underscores (`Sub-County`, `sub county` and `subcounty` are one name).
pub fn squash(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '.' | '\t'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn region(what: &'static str, code: &str) -> Result<country::Id, SchemaError> {
    code.trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| SchemaError::UnknownRegion {
            what,
            code: code.to_string(),
        })
}

impl ContactSchema {
    /// Checks the `contacts:` config and builds the schema from it.
    pub fn from_config(config: &ContactsConfig) -> Result<ContactSchema, SchemaError> {
        let default_region = region("default_region", &config.default_region)?;
        let accepted = config
            .accepted_countries
            .iter()
            .map(|c| region("accepted_countries", c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut schema = ContactSchema {
            default_region,
            accepted,
            declared: Vec::new(),
            columns: BTreeMap::new(),
            operators: Vec::new(),
        };
        for (field, name, aliases) in BUILT_INS {
            for alias in std::iter::once(name).chain(aliases.iter()) {
                schema.columns.insert(squash(alias), *field);
            }
        }
        let location = config.location_fields.iter().map(|name| DeclaredField {
            name: name.clone(),
            kind: FieldKind::Text,
            choices: Vec::new(),
        });
        let custom = config.custom_fields.iter().map(|(name, c)| DeclaredField {
            name: name.clone(),
            kind: c.kind,
            choices: c.choices.clone(),
        });
        for field in location.chain(custom) {
            schema.declare(field)?;
        }
        for (alias, field) in &config.column_aliases {
            let target = schema
                .field_named(field)
                .ok_or_else(|| SchemaError::AliasToUnknown {
                    alias: alias.clone(),
                    field: field.clone(),
                })?;
            if schema.columns.insert(squash(alias), target).is_some() {
                return Err(SchemaError::DuplicateField(alias.clone()));
            }
        }
        for (operator, prefixes) in &config.operators {
            for prefix in prefixes {
                let digits = prefix.strip_prefix('+').unwrap_or("");
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SchemaError::BadPrefix {
                        operator: operator.clone(),
                        prefix: prefix.clone(),
                    });
                }
                schema.operators.push((prefix.clone(), operator.clone()));
            }
        }
        schema
            .operators
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(schema)
    }

    fn declare(&mut self, field: DeclaredField) -> Result<(), SchemaError> {
        if !valid_field_name(&field.name) {
            return Err(SchemaError::BadFieldName(field.name));
        }
        match (field.kind, field.choices.is_empty()) {
            (FieldKind::Choice, true) => return Err(SchemaError::NoChoices(field.name)),
            (FieldKind::Choice, false) | (_, true) => {}
            (_, false) => return Err(SchemaError::ChoicesNotAllowed(field.name)),
        }
        let key = squash(&field.name);
        if self.columns.contains_key(&key) {
            return Err(SchemaError::DuplicateField(field.name));
        }
        self.columns
            .insert(key, Field::Declared(self.declared.len()));
        self.declared.push(field);
        Ok(())
    }

    /// The location and custom fields, location fields first.
    pub fn declared(&self) -> &[DeclaredField] {
        &self.declared
    }

    /// The field a header (or a segment's `field:`) names, matched loosely ([`squash`]),
    /// through the built-in and configured aliases.
    pub fn field_named(&self, name: &str) -> Option<Field> {
        self.columns.get(&squash(name)).copied()
    }

    /// The field's own name (`birth_year`, `ward`).
    pub fn name_of(&self, field: Field) -> &str {
        match field {
            Field::Declared(i) => self.declared.get(i).map_or("?", |d| d.name.as_str()),
            builtin => BUILT_INS
                .iter()
                .find(|(f, _, _)| *f == builtin)
                .map_or("?", |(_, name, _)| name),
        }
    }

    /// Every field name, for error messages (`one of: ...`).
    pub fn field_names(&self) -> Vec<&str> {
        BUILT_INS
            .iter()
            .map(|(_, name, _)| *name)
            .chain(self.declared.iter().map(|d| d.name.as_str()))
            .collect()
    }

    /// The number in E.164, if it can be read, is valid and belongs to an accepted country.
    /// Spaces, dashes, dots, brackets, `(0)`, `tel:` and a leading `00` are all understood;
    /// a number without a country code is read in the default region.
    pub fn normalise_number(&self, raw: &str) -> Result<String, ValueError> {
        let number = self.parse_number(raw)?;
        let code = number.code().value();
        let Some(country) = number.country().id() else {
            return Err(ValueError::UnreadableNumber);
        };
        if !self.accepted.contains(&country) {
            return Err(ValueError::CountryNotAccepted {
                country: country.as_ref().to_string(),
                code,
            });
        }
        if !number.is_valid() {
            return Err(ValueError::InvalidNumber(country.as_ref().to_string()));
        }
        Ok(number.format().mode(phonenumber::Mode::E164).to_string())
    }

    /// The one form of a number for consent: E.164 when it can be read as a valid number of
    /// any country (accepted or not: a refusal must hold for every number), otherwise the
    /// number as the gateway received it, trimmed.
    pub fn consent_key(&self, raw: &str) -> String {
        match self.parse_number(raw) {
            Ok(number) if number.is_valid() => {
                number.format().mode(phonenumber::Mode::E164).to_string()
            }
            _ => crate::channels::normalise_msisdn(raw.trim()),
        }
    }

    fn parse_number(&self, raw: &str) -> Result<phonenumber::PhoneNumber, ValueError> {
        let text = raw.trim();
        // `00254...` and Kenya's own `000254...`: the international prefix written out.
        let text = if text.starts_with("00") {
            format!("+{}", text.trim_start_matches('0'))
        } else {
            text.to_string()
        };
        if !text.bytes().any(|b| b.is_ascii_digit()) {
            return Err(ValueError::UnreadableNumber);
        }
        let number = phonenumber::parse(Some(self.default_region), &text)
            .map_err(|_| ValueError::UnreadableNumber)?;
        if number.extension().is_some() {
            return Err(ValueError::Extension);
        }
        Ok(number)
    }

    /// The operator whose prefix the E.164 number starts with (longest prefix wins).
    pub fn operator_of(&self, msisdn: &str) -> Option<&str> {
        self.operators
            .iter()
            .find(|(prefix, _)| msisdn.starts_with(prefix.as_str()))
            .map(|(_, name)| name.as_str())
    }

    /// The operators of the prefix table, each once, by name.
    pub fn operator_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.operators.iter().map(|(_, n)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The stored form of `raw` for `field`, or `None` for an empty cell. `this_year`
    /// bounds a year of birth.
    pub fn normalise_value(
        &self,
        field: Field,
        raw: &str,
        this_year: i32,
    ) -> Result<Option<String>, ValueError> {
        let text = collapse_spaces(raw);
        if text.is_empty() {
            return Ok(None);
        }
        let value = match field {
            Field::Number => self.normalise_number(&text)?,
            Field::Name => bounded_text("name", text)?,
            Field::Language => language(&text)?,
            Field::Channel => self.choice("channel", &text, CHANNELS)?,
            Field::Gender => self.choice("gender", &text, GENDERS)?,
            Field::BirthYear => birth_year(&text, this_year)?,
            Field::AgeBand => age_band(&text)?,
            Field::Consent => consent_word(&text)
                .ok_or_else(|| ValueError::UnknownChoice {
                    field: "consent".into(),
                    value: text.clone(),
                    allowed: "yes, no (or opted_in, opted_out)".into(),
                })?
                .as_str()
                .to_string(),
            Field::Operator | Field::LastSeen => {
                return Err(ValueError::NotImportable(self.name_of(field).to_string()));
            }
            Field::Declared(i) => {
                let declared = &self.declared[i];
                let name = declared.name.as_str();
                match declared.kind {
                    FieldKind::Text => bounded_text(name, text)?,
                    FieldKind::Number => number_value(name, &text)?,
                    FieldKind::Date => dates::parse_date(&text)
                        .map(dates::Date::to_iso)
                        .ok_or_else(|| ValueError::BadDate {
                            field: name.into(),
                            value: text.clone(),
                        })?,
                    FieldKind::Choice => {
                        let allowed: Vec<(&str, &[&str])> = declared
                            .choices
                            .iter()
                            .map(|c| (c.as_str(), &[][..]))
                            .collect();
                        self.choice(name, &text, &allowed)?
                    }
                }
            }
        };
        Ok(Some(value))
    }

    /// The allowed value `text` names (its own name or an alias, without case).
    fn choice(
        &self,
        field: &str,
        text: &str,
        allowed: &[(&str, &[&str])],
    ) -> Result<String, ValueError> {
        let wanted = squash(text);
        allowed
            .iter()
            .find(|(value, aliases)| {
                squash(value) == wanted || aliases.iter().any(|a| squash(a) == wanted)
            })
            .map(|(value, _)| value.to_string())
            .ok_or_else(|| ValueError::UnknownChoice {
                field: field.into(),
                value: text.into(),
                allowed: allowed
                    .iter()
                    .map(|(v, _)| *v)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Channels a contact may prefer, with the words people write for them.
pub const CHANNELS: &[(&str, &[&str])] = &[
    ("ussd", &[]),
    ("sms", &["text", "ujumbe"]),
    ("voice", &["call", "ivr", "simu"]),
];

/// Genders, with common English and Swahili words and abbreviations.
pub const GENDERS: &[(&str, &[&str])] = &[
    ("female", &["f", "woman", "w", "mwanamke", "kike", "ke"]),
    ("male", &["m", "man", "mwanaume", "kiume", "me"]),
    ("intersex", &[]),
    ("other", &["o", "nyingine"]),
];

/// Language names people write, to their ISO 639-1 code.
const LANGUAGE_NAMES: &[(&str, &str)] = &[
    ("english", "en"),
    ("kiingereza", "en"),
    ("swahili", "sw"),
    ("kiswahili", "sw"),
    ("french", "fr"),
    ("francais", "fr"),
    ("français", "fr"),
];

/// The consent an import cell states (`yes`, `no`, `1`, `0`, `ndio`, `hapana`...).
pub fn consent_word(text: &str) -> Option<ConsentStatus> {
    match squash(text).as_str() {
        "yes" | "y" | "true" | "1" | "optedin" | "optin" | "in" | "ndio" | "ndiyo" => {
            Some(ConsentStatus::OptedIn)
        }
        "no" | "n" | "false" | "0" | "optedout" | "optout" | "out" | "stop" | "hapana" => {
            Some(ConsentStatus::OptedOut)
        }
        _ => None,
    }
}

/// Trims and turns every run of whitespace (newlines from quoted cells too) into one space.
fn collapse_spaces(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn bounded_text(field: &str, text: String) -> Result<String, ValueError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ValueError::TooLong {
            field: field.into(),
            max: MAX_TEXT_CHARS,
        });
    }
    Ok(text)
}

fn language(text: &str) -> Result<String, ValueError> {
    let lower = text.to_lowercase();
    if let Some((_, code)) = LANGUAGE_NAMES.iter().find(|(name, _)| *name == lower) {
        return Ok((*code).to_string());
    }
    let is_code = (2..=3).contains(&lower.len()) && lower.bytes().all(|b| b.is_ascii_lowercase());
    if is_code {
        Ok(lower)
    } else {
        Err(ValueError::BadLanguage(text.into()))
    }
}

fn birth_year(text: &str, this_year: i32) -> Result<String, ValueError> {
    match text.parse::<i32>() {
        Ok(year) if (1900..=this_year).contains(&year) => Ok(year.to_string()),
        _ => Err(ValueError::BadYear(text.into())),
    }
}

/// `20-24` (also with an en dash or spaces) or `35+`.
fn age_band(text: &str) -> Result<String, ValueError> {
    let bad = || ValueError::BadAgeBand(text.into());
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let compact = compact.replace('\u{2013}', "-");
    let age = |s: &str| s.parse::<u8>().ok().filter(|a| *a <= 120);
    if let Some(low) = compact.strip_suffix('+') {
        return age(low).map(|a| format!("{a}+")).ok_or_else(bad);
    }
    let (low, high) = compact.split_once('-').ok_or_else(bad)?;
    match (age(low), age(high)) {
        (Some(low), Some(high)) if low <= high => Ok(format!("{low}-{high}")),
        _ => Err(bad()),
    }
}

/// A number in its shortest decimal form (`4`, `2.5`).
fn number_value(field: &str, text: &str) -> Result<String, ValueError> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n.to_string()),
        _ => Err(ValueError::BadNumber {
            field: field.into(),
            value: text.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomFieldConfig;

    fn schema() -> ContactSchema {
        let mut config = ContactsConfig::default();
        config.custom_fields.insert(
            "chv_status".into(),
            CustomFieldConfig {
                kind: FieldKind::Choice,
                choices: vec!["active".into(), "inactive".into()],
            },
        );
        config.custom_fields.insert(
            "household_size".into(),
            CustomFieldConfig {
                kind: FieldKind::Number,
                choices: vec![],
            },
        );
        ContactSchema::from_config(&config).expect("valid")
    }

    #[test]
    fn kenyan_numbers_in_every_written_form_are_one_number() {
        let s = schema();
        for raw in [
            "0712 345 678",
            "+254 712-345-678",
            "254712345678",
            "712345678",
            "(0712) 345678",
            "0712.345.678",
            "+254 (0) 712 345 678",
            "00254712345678",
            "tel:+254712345678",
            " +254712345678 ",
        ] {
            assert_eq!(
                s.normalise_number(raw).as_deref(),
                Ok("+254712345678"),
                "{raw}"
            );
        }
    }

    #[test]
    fn foreign_short_and_unreadable_numbers_are_refused() {
        let s = schema();
        assert_eq!(
            s.normalise_number("+255 754 123 456"),
            Err(ValueError::CountryNotAccepted {
                country: "TZ".into(),
                code: 255
            })
        );
        assert_eq!(
            s.normalise_number("0712 345 67"),
            Err(ValueError::InvalidNumber("KE".into()))
        );
        assert_eq!(
            s.normalise_number("hello"),
            Err(ValueError::UnreadableNumber)
        );
        assert_eq!(s.normalise_number(""), Err(ValueError::UnreadableNumber));
    }

    #[test]
    fn operators_come_from_the_longest_prefix() {
        let s = schema();
        assert_eq!(s.operator_of("+254712345678"), Some("safaricom"));
        assert_eq!(s.operator_of("+254110123456"), Some("safaricom"));
        assert_eq!(s.operator_of("+254733123456"), Some("airtel"));
        assert_eq!(s.operator_of("+254771123456"), Some("telkom"));
        assert_eq!(s.operator_of("+254201234567"), None);
    }

    #[test]
    fn headers_match_loosely_and_through_aliases() {
        let s = schema();
        assert_eq!(s.field_named("Phone Number"), Some(Field::Number));
        assert_eq!(s.field_named("SIMU"), Some(Field::Number));
        assert_eq!(s.field_named("\u{feff}msisdn"), Some(Field::Number));
        assert_eq!(s.field_named("Sub-County"), s.field_named("subcounty"));
        assert_eq!(s.field_named("Kaunti"), s.field_named("county"));
        assert_eq!(s.field_named("shoe_size"), None);
        assert_eq!(
            s.name_of(s.field_named("YOB").expect("alias")),
            "birth_year"
        );
    }

    #[test]
    fn values_get_one_stored_form() {
        let s = schema();
        let v = |f: Field, raw: &str| s.normalise_value(f, raw, 2026);
        assert_eq!(v(Field::Gender, "Mwanamke"), Ok(Some("female".into())));
        assert_eq!(v(Field::Gender, " M "), Ok(Some("male".into())));
        assert_eq!(v(Field::Language, "Kiswahili"), Ok(Some("sw".into())));
        assert_eq!(v(Field::Channel, "SMS"), Ok(Some("sms".into())));
        assert_eq!(v(Field::AgeBand, "20 – 24"), Ok(Some("20-24".into())));
        assert_eq!(v(Field::AgeBand, "35 +"), Ok(Some("35+".into())));
        assert!(v(Field::AgeBand, "24-20").is_err());
        assert_eq!(v(Field::BirthYear, "1990"), Ok(Some("1990".into())));
        assert!(v(Field::BirthYear, "2031").is_err());
        assert_eq!(
            v(Field::Name, "  Wanjiku \n Kamau "),
            Ok(Some("Wanjiku Kamau".into()))
        );
        assert_eq!(v(Field::Name, "   "), Ok(None));
        assert_eq!(v(Field::Consent, "Ndiyo"), Ok(Some("opted_in".into())));
        let status = s.field_named("chv_status").expect("declared");
        assert_eq!(v(status, "ACTIVE"), Ok(Some("active".into())));
        assert!(matches!(
            v(status, "retired"),
            Err(ValueError::UnknownChoice { .. })
        ));
        let size = s.field_named("household_size").expect("declared");
        assert_eq!(v(size, "4.0"), Ok(Some("4".into())));
        assert!(v(size, "four").is_err());
        assert!(v(Field::Operator, "safaricom").is_err());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let config = ContactsConfig {
            default_region: "XX".into(),
            ..Default::default()
        };
        assert!(matches!(
            ContactSchema::from_config(&config),
            Err(SchemaError::UnknownRegion { .. })
        ));
        let mut config = ContactsConfig::default();
        config.location_fields.push("Phone".into());
        assert_eq!(
            ContactSchema::from_config(&config).err(),
            Some(SchemaError::BadFieldName("Phone".into()))
        );
        let mut config = ContactsConfig::default();
        config.location_fields.push("phone".into());
        assert_eq!(
            ContactSchema::from_config(&config).err(),
            Some(SchemaError::DuplicateField("phone".into()))
        );
        let mut config = ContactsConfig::default();
        config.custom_fields.insert(
            "status".into(),
            CustomFieldConfig {
                kind: FieldKind::Choice,
                choices: vec![],
            },
        );
        assert_eq!(
            ContactSchema::from_config(&config).err(),
            Some(SchemaError::NoChoices("status".into()))
        );
    }
}
