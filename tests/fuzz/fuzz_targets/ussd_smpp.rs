//! Any bytes as a USSD deliver_sm, read through the standard and a vendor USSD-over-SMPP
//! profile: a dialogue step or a clear error, never a panic; the stored dialogue record always
//! reads back; and the screen rendered in reply always encodes as a submit_sm. The bytes are
//! either a whole PDU or, so most inputs reach the USSD reading, the parts of one built here:
//! op code, which session TLVs (well or badly formed), their values, coding and text.
#![no_main]

use baraza::channels::ussd::UssdReply;
use baraza::channels::ussd::smpp::{
    DialogueChange, DialogueRecord, dialogue_step, read_deliver, render_submit,
};
use baraza::config::{UssdOverSmppProfile, UssdSessionIdSource};
use baraza::encoding::gsm7::GsmCoding;
use baraza::smpp::tlv::{Tlv, tags};
use baraza::smpp::{Body, Pdu, ShortMessage};
use libfuzzer_sys::fuzz_target;

/// A deliver_sm from the fuzzer's bytes: a decoded PDU when they are one, else built field by
/// field.
fn deliver_sm(data: &[u8]) -> Option<ShortMessage> {
    if let Ok(Pdu {
        body: Body::DeliverSm(sm),
        ..
    }) = Pdu::decode(data)
    {
        return Some(sm);
    }
    let (&[op, flags, number, sequence, umr_high, umr_low], text) = data.split_first_chunk()?
    else {
        return None;
    };
    let mut tlvs = Vec::new();
    if flags & 1 != 0 {
        tlvs.push(Tlv::new(tags::USSD_SERVICE_OP, vec![op]));
    }
    if flags & 2 != 0 {
        tlvs.push(Tlv::new(tags::ITS_SESSION_INFO, vec![number, sequence]));
    }
    if flags & 4 != 0 {
        tlvs.push(Tlv::new(tags::USER_MESSAGE_REFERENCE, vec![umr_high, umr_low]));
    }
    if flags & 8 != 0 {
        // A session TLV of the wrong length.
        tlvs.push(Tlv::new(tags::ITS_SESSION_INFO, vec![number]));
    }
    let short_message = text.get(..text.len().min(254)).unwrap_or_default().to_vec();
    Some(ShortMessage {
        service_type: "USSD".into(),
        source_addr: "254711000001".into(),
        destination_addr: if flags & 16 != 0 { "*384*12#" } else { "384" }.into(),
        data_coding: if flags & 32 != 0 { 8 } else { 0 },
        short_message: short_message.into(),
        tlvs,
        ..ShortMessage::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(sm) = deliver_sm(data) else { return };
    let standard = UssdOverSmppProfile::default();
    let vendor = UssdOverSmppProfile {
        begin_ops: vec![32],
        abort_ops: vec![129],
        continue_op: 18,
        end_op: 23,
        session_id: UssdSessionIdSource::UserMessageReference,
        ..UssdOverSmppProfile::default()
    };
    for profile in [&standard, &vendor] {
        let Ok(deliver) = read_deliver(profile, &sm) else { continue };
        let (request, change) = dialogue_step("op", &deliver, "p", profile, &[], None, 0);
        if let DialogueChange::Save(record) = change {
            assert_eq!(DialogueRecord::decode(&record.encode()), Some(record));
        }
        assert!(!request.session_id.is_empty());
        for end in [false, true] {
            let reply = UssdReply {
                text: "Asante – choose 1 or 2".to_string(),
                end,
            };
            if let Ok(submit) = render_submit(profile, &deliver, "384", &reply, GsmCoding::Zero) {
                Pdu::new(1, Body::SubmitSm(submit))
                    .to_bytes()
                    .expect("a rendered USSD screen always encodes");
            }
        }
    }
});
