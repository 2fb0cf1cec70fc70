//! GSM 03.38 default alphabet (with its extension table) and the UCS-2 fallback: which
//! characters force UCS-2, what a text costs in septets or UTF-16 units, how many SMS parts it
//! takes, and the USSD screen limit. Pure functions; the SMPP codec (packing septets onto the
//! wire, UDH) is not here yet.
//!
//! Segment counts assume the usual concatenation header (153 septets / 67 UCS-2 units per
//! part); they do not yet account for an escape pair or a surrogate pair that cannot be split
//! across two parts, so a text right at a boundary may need one part more than reported.

/// How a text travels over the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (extension characters cost two septets).
    Gsm7,
    /// UCS-2 (UTF-16BE on the wire): needed as soon as one character is outside GSM 03.38.
    Ucs2,
}

/// Septets a character costs in GSM-7: 1 (base table), 2 (extension table, behind ESC), or
/// `None` when it is not in GSM 03.38 at all.
pub fn septets(c: char) -> Option<u8> {
    const BASE: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXT: &str = "\u{c}^{}\\[~]|€";
    if BASE.contains(c) {
        Some(1)
    } else if EXT.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The first character (by char index) that forces UCS-2, if any.
pub fn first_non_gsm(text: &str) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find(|(_, c)| septets(*c).is_none())
}

/// The encoding a text needs.
pub fn encoding_for(text: &str) -> Encoding {
    if first_non_gsm(text).is_some() {
        Encoding::Ucs2
    } else {
        Encoding::Gsm7
    }
}

/// Length in the encoding's units: septets for GSM-7, UTF-16 code units for UCS-2.
pub fn units(text: &str, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 => text
            .chars()
            .map(|c| usize::from(septets(c).unwrap_or(1)))
            .sum(),
        Encoding::Ucs2 => text.encode_utf16().count(),
    }
}

/// Size and segment count of a text sent as SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SmsInfo {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Number of SMS parts (160/153 GSM-7, 70/67 UCS-2 with an 8-bit-reference UDH).
    pub segments: usize,
}

pub fn sms_info(text: &str) -> SmsInfo {
    let encoding = encoding_for(text);
    let units = units(text, encoding);
    let (single, multi) = match encoding {
        Encoding::Gsm7 => (160, 153),
        Encoding::Ucs2 => (70, 67),
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    SmsInfo {
        encoding,
        units,
        segments,
    }
}

/// The most a single USSD screen may hold: 182 septets, or 80 UCS-2 units.
pub fn ussd_limit(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 => 182,
        Encoding::Ucs2 => 80,
    }
}
