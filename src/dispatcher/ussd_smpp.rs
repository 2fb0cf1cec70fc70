//! USSD over SMPP, the dispatcher's part: keeps each dialogue's record (session id, code,
//! answers counted) in the session store between its messages, so a dialogue continues when
//! its next deliver_sm arrives on another node's bind or after a restart, and then runs the
//! step like any USSD step. Knows no PDU (the channel reads and renders them) and no Redis
//! key (the session store owns them).

use super::{Gateway, StepError, now_ms};
use crate::channels::ussd::UssdRequest;
use crate::channels::ussd::smpp::{
    DIALOGUE_IDLE, DialogueChange, DialogueRecord, UssdDeliver, dialogue_id, dialogue_step,
};
use crate::config::UssdOverSmppProfile;
use crate::session_store::{SaveOutcome, SessionKey};

/// The session-store channel name of dialogue records (beside the flow sessions).
const DIALOGUE_CHANNEL: &str = "ussd-smpp-dialogue";

/// How long the empty value left by a closed dialogue is kept (it only has to outlive a
/// racing message of the closed dialogue).
const CLOSED_RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Two messages of one dialogue racing (a network retry) get this many tries.
const TRIES: usize = 3;

impl Gateway {
    /// The dispatcher request for a USSD deliver_sm on `operator`'s bind, its dialogue record
    /// read and updated in the session store (compare-and-set, so two copies of one answer
    /// are not both counted).
    pub async fn ussd_smpp_request(
        &self,
        operator: &str,
        deliver: &UssdDeliver,
        profile: &UssdOverSmppProfile,
    ) -> Result<UssdRequest, StepError> {
        let map = |e: crate::session_store::SessionStoreError| StepError::Sessions(e.to_string());
        let key = SessionKey::new(DIALOGUE_CHANNEL, &dialogue_id(operator, deliver));
        let pseudonym = self.pseudonym(&deliver.subscriber);
        for _ in 0..TRIES {
            let stored = self.sessions.load(&key).await.map_err(map)?;
            let version = stored.as_ref().map(|s| s.version);
            let record = stored.and_then(|s| DialogueRecord::decode(&s.data));
            let (request, change) = dialogue_step(
                operator,
                deliver,
                &pseudonym,
                profile,
                &self.routes,
                record,
                now_ms(),
            );
            match change {
                DialogueChange::Keep => return Ok(request),
                DialogueChange::Remove => {
                    self.sessions.delete(&key).await.map_err(map)?;
                    return Ok(request);
                }
                DialogueChange::Save(record) => {
                    match self
                        .sessions
                        .save(&key, version, &record.encode(), DIALOGUE_IDLE)
                        .await
                        .map_err(map)?
                    {
                        SaveOutcome::Saved { .. } => return Ok(request),
                        SaveOutcome::Conflict { .. } => continue,
                    }
                }
            }
        }
        Err(StepError::Contention)
    }

    /// Forgets the dialogue once its last screen went out, if `session_id` is still the one
    /// stored for it. The record is overwritten with an empty value under a version check
    /// rather than deleted, so a new begin on the same session number that was stored in the
    /// meantime is never lost.
    pub async fn ussd_smpp_closed(&self, operator: &str, deliver: &UssdDeliver, session_id: &str) {
        let key = SessionKey::new(DIALOGUE_CHANNEL, &dialogue_id(operator, deliver));
        let stored = match self.sessions.load(&key).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "USSD dialogue record not read; it expires on its own");
                return;
            }
        };
        let Some(stored) = stored else { return };
        let current = DialogueRecord::decode(&stored.data);
        if current.is_some_and(|record| record.session_id == session_id)
            && let Err(e) = self
                .sessions
                .save(&key, Some(stored.version), b"", CLOSED_RECORD_TTL)
                .await
        {
            tracing::warn!(error = %e, "USSD dialogue record not closed; it expires on its own");
        }
    }
}
