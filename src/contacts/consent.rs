//! Consent, with one source of truth: the result store's consent table. Opting out and back
//! in, asking whether a number is opted out, and carrying over opt-outs kept elsewhere before
//! contacts existed; every change is logged by the store in the same transaction.
//!
//! Numbers are keyed by [`ContactSchema::consent_key`] (E.164 when readable, of any country:
//! an opt-out holds for numbers the contact list would refuse). An opt-out always applies; an
//! opt-in applies when the citizen or an operator asks (start word, API), and an import's or
//! a first message's opt-in only where nothing is recorded yet ([`ConsentRule::IfUnknown`]),
//! so no file ever undoes a STOP. It never logs a number.

use crate::result_store::{
    ConsentChange, ConsentRecord, ConsentRule, ConsentSource, ConsentStatus, ResultStore,
    ResultStoreError,
};

use super::ContactSchema;

/// Who or what changes a number's consent, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentActor {
    pub source: ConsentSource,
    /// The channel the request came over (`sms`, `ussd`, `voice`), when from the citizen.
    pub channel: Option<String>,
    /// The operator or file behind it, when not the citizen.
    pub by: Option<String>,
}

impl ConsentActor {
    /// The citizen, over `channel` (`source`: a keyword, a flow action, a first message).
    pub fn citizen(source: ConsentSource, channel: &str) -> ConsentActor {
        ConsentActor {
            source,
            channel: Some(channel.to_string()),
            by: None,
        }
    }
}

/// Consent calls for one store and one set of number rules.
#[derive(Debug, Clone, Copy)]
pub struct Consent<'a> {
    pub store: &'a ResultStore,
    pub schema: &'a ContactSchema,
}

impl Consent<'_> {
    fn change(
        &self,
        number: &str,
        status: ConsentStatus,
        actor: &ConsentActor,
        at_ms: i64,
    ) -> ConsentChange {
        ConsentChange {
            msisdn: self.schema.consent_key(number),
            consent: ConsentRecord {
                status,
                source: actor.source,
                channel: actor.channel.clone(),
                changed_by: actor.by.clone(),
                at_ms,
            },
        }
    }

    async fn set(
        &self,
        number: &str,
        status: ConsentStatus,
        rule: ConsentRule,
        actor: &ConsentActor,
        at_ms: i64,
    ) -> Result<bool, ResultStoreError> {
        let change = self.change(number, status, actor, at_ms);
        self.store.change_consent(change, rule).await
    }

    /// Opts `number` out (whatever form it is written in). Whether this changed anything (a
    /// number already opted out stays as it was, and nothing is logged).
    pub async fn opt_out(
        &self,
        number: &str,
        actor: &ConsentActor,
        at_ms: i64,
    ) -> Result<bool, ResultStoreError> {
        let (status, rule) = (ConsentStatus::OptedOut, ConsentRule::Always);
        self.set(number, status, rule, actor, at_ms).await
    }

    /// Opts `number` back in, at the citizen's or an operator's request (a start word, the
    /// API): this one undoes an opt-out. Whether this changed anything.
    pub async fn opt_in(
        &self,
        number: &str,
        actor: &ConsentActor,
        at_ms: i64,
    ) -> Result<bool, ResultStoreError> {
        let (status, rule) = (ConsentStatus::OptedIn, ConsentRule::Always);
        self.set(number, status, rule, actor, at_ms).await
    }

    /// Records consent given implicitly (a first message, a register): only where the number
    /// has no consent recorded, so it never undoes an opt-out. Whether this changed anything.
    pub async fn opt_in_if_unknown(
        &self,
        number: &str,
        actor: &ConsentActor,
        at_ms: i64,
    ) -> Result<bool, ResultStoreError> {
        let (status, rule) = (ConsentStatus::OptedIn, ConsentRule::IfUnknown);
        self.set(number, status, rule, actor, at_ms).await
    }

    /// Whether `number` is opted out: what every outbound path asks at send time.
    pub async fn is_opted_out(&self, number: &str) -> Result<bool, ResultStoreError> {
        let consent = self
            .store
            .consent_of(&self.schema.consent_key(number))
            .await?;
        Ok(consent.is_some_and(|c| c.status == ConsentStatus::OptedOut))
    }

    /// Which of `numbers` are opted out (as they were given): one read for a whole send.
    pub async fn opted_out_among(
        &self,
        numbers: &[String],
    ) -> Result<Vec<String>, ResultStoreError> {
        let keys: Vec<String> = numbers.iter().map(|n| self.schema.consent_key(n)).collect();
        let out = self.store.opted_out_among(&keys).await?;
        Ok(numbers
            .iter()
            .zip(&keys)
            .filter(|(_, key)| out.contains(*key))
            .map(|(number, _)| number.clone())
            .collect())
    }

    /// The audit trail of `number`, oldest first.
    pub async fn log(&self, number: &str) -> Result<Vec<ConsentChange>, ResultStoreError> {
        self.store
            .consent_log(&self.schema.consent_key(number))
            .await
    }

    /// Stores as opted out (source `session_store`) the numbers an older store kept opt-outs
    /// for, in one transaction; those already opted out are left as they are. How many
    /// changed.
    pub async fn carry_over(
        &self,
        numbers: &[String],
        at_ms: i64,
    ) -> Result<usize, ResultStoreError> {
        let actor = ConsentActor {
            source: ConsentSource::SessionStore,
            channel: None,
            by: None,
        };
        let batch = crate::result_store::ContactBatch {
            contacts: Vec::new(),
            consent: numbers
                .iter()
                .map(|n| {
                    let change = self.change(n, ConsentStatus::OptedOut, &actor, at_ms);
                    (change, ConsentRule::Always)
                })
                .collect(),
        };
        let changed = self.store.write_contacts(batch).await?;
        Ok(changed.into_iter().filter(|c| *c).count())
    }
}
