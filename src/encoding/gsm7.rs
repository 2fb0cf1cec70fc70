//! GSM 03.38 default alphabet (with its extension table), UCS-2 and Latin-1: which characters
//! force UCS-2, what a text costs in septets or UTF-16 units, how many SMS parts it takes, the
//! USSD screen limit, and the byte-level codecs the SMPP layer needs (unpacked septets as SMPP
//! carries them, 7-bit packing with fill bits, UTF-16BE, Latin-1) plus the SMPP `data_coding`
//! values.
//!
//! Pure functions; no I/O. Decoders never panic on any input: bytes that mean nothing become
//! U+FFFD (or what 3GPP TS 23.038 says a handset displays). Splitting into parts lives in
//! [`super::split`], reassembly of inbound parts in [`super::reassembly`].

/// How a text travels over the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (extension characters cost two septets).
    Gsm7,
    /// UCS-2 (UTF-16BE on the wire): needed as soon as one character is outside GSM 03.38.
    Ucs2,
}

/// The escape septet: the next septet is read from the extension table.
pub const ESCAPE: u8 = 0x1B;

/// What a receiver shows for a byte that means nothing in the coding.
const REPLACEMENT: char = '\u{FFFD}';

/// The GSM 03.38 default alphabet: the character at index `n` is septet `n`. Index 0x1B is the
/// escape to the extension table, not a character; it holds ESC only to keep positions right
/// and is never matched when encoding.
pub const DEFAULT_ALPHABET: [char; 128] = [
    // 0x00
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
    // 0x10
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É',
    // 0x20
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
    // 0x30
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?',
    // 0x40
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
    // 0x50
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
    // 0x60
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    // 0x70
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
];

/// The GSM 03.38 extension table: (septet after ESC, character). Each costs two septets.
pub const EXTENSION_TABLE: [(u8, char); 10] = [
    (0x0A, '\u{C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septet of a character in the default alphabet, if it has one.
fn base_septet(c: char) -> Option<u8> {
    match c {
        // Fast path: these ASCII ranges sit at their ASCII positions.
        'A'..='Z' | 'a'..='z' | '0'..='9' => u8::try_from(c).ok(),
        // 0x20..=0x3F match ASCII except 0x24, which is '¤' in GSM ('$' is 0x02).
        ' '..='?' if c != '$' => u8::try_from(c).ok(),
        _ => DEFAULT_ALPHABET
            .iter()
            .position(|&known| known == c && known != '\u{1B}')
            .and_then(|index| u8::try_from(index).ok()),
    }
}

/// The septet after ESC of a character in the extension table, if it is there.
fn extension_septet(c: char) -> Option<u8> {
    EXTENSION_TABLE
        .iter()
        .find(|(_, known)| *known == c)
        .map(|(septet, _)| *septet)
}

/// Septets a character costs in GSM-7: 1 (base table), 2 (extension table, behind ESC), or
/// `None` when it is not in GSM 03.38 at all.
pub fn septets(c: char) -> Option<u8> {
    if base_septet(c).is_some() {
        Some(1)
    } else if extension_septet(c).is_some() {
        Some(2)
    } else {
        None
    }
}

/// Septets of each ASCII character (0 when GSM 03.38 cannot carry it), so that the texts a
/// gateway renders on every step, mostly ASCII, are measured a byte at a time instead of
/// searching the alphabet per character. Built from the two tables above at compile time.
const ASCII_SEPTETS: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut i = 0;
    while i < DEFAULT_ALPHABET.len() {
        let c = DEFAULT_ALPHABET[i] as u32;
        if c < 128 && c != ESCAPE as u32 {
            table[c as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < EXTENSION_TABLE.len() {
        let c = EXTENSION_TABLE[i].1 as u32;
        if c < 128 {
            table[c as usize] = 2;
        }
        i += 1;
    }
    table
};

/// The leading ASCII run of `text`: its byte length (= its char count) and what it costs in
/// septets, or the index and character of its first non-GSM character.
fn ascii_prefix(text: &str) -> Result<(usize, usize), (usize, char)> {
    let mut septets = 0;
    for (index, &byte) in text.as_bytes().iter().enumerate() {
        if byte >= 0x80 {
            return Ok((index, septets));
        }
        match ASCII_SEPTETS[usize::from(byte)] {
            0 => return Err((index, char::from(byte))),
            cost => septets += usize::from(cost),
        }
    }
    Ok((text.len(), septets))
}

/// The first character (by char index) that forces UCS-2, if any.
pub fn first_non_gsm(text: &str) -> Option<(usize, char)> {
    let start = match ascii_prefix(text) {
        Ok((start, _)) => start,
        Err(found) => return Some(found),
    };
    text[start..]
        .chars()
        .enumerate()
        .find(|(_, c)| septets(*c).is_none())
        .map(|(index, c)| (start + index, c))
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
        Encoding::Gsm7 => {
            // A character outside GSM 03.38 counts one septet here, as below.
            let (start, ascii) = ascii_prefix(text).unwrap_or((0, 0));
            ascii
                + text[start..]
                    .chars()
                    .map(|c| usize::from(septets(c).unwrap_or(1)))
                    .sum::<usize>()
        }
        Encoding::Ucs2 => text.encode_utf16().count(),
    }
}

/// Size and segment count of a text sent as SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SmsInfo {
    /// GSM-7 when every character is in GSM 03.38, UCS-2 otherwise.
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Number of SMS parts (160/153 GSM-7, 70/67 UCS-2 with an 8-bit-reference UDH), counted
    /// exactly as [`super::split::split`] cuts: an escape pair or a surrogate pair is never
    /// cut, so a text at a boundary may take one part more than `units / 153` suggests. Not
    /// capped at the 255 parts a concatenated message can have.
    pub segments: usize,
}

/// Encoding, size and exact part count of `text` sent as SMS with an 8-bit-reference UDH.
pub fn sms_info(text: &str) -> SmsInfo {
    let encoding = encoding_for(text);
    let units = units(text, encoding);
    let segments = match encoding {
        Encoding::Gsm7 => super::split::count_parts(
            text,
            |c| usize::from(septets(c).unwrap_or(1)),
            super::split::GSM_SINGLE,
            super::split::GSM_PER_PART_UDH8,
        ),
        Encoding::Ucs2 => super::split::count_parts(
            text,
            |c| c.len_utf16() * 2,
            super::split::OCTETS_SINGLE,
            super::split::OCTETS_PER_PART_UDH8,
        ),
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

/// A character that GSM 03.38 (base and extension tables) cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("character {ch:?} at position {index} is not in the GSM 03.38 alphabet; send as UCS-2")]
pub struct NotGsm {
    /// The offending character.
    pub ch: char,
    /// Its position, counted in characters (as [`first_non_gsm`] counts).
    pub index: usize,
}

/// A character that Latin-1 (ISO 8859-1) cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("character {ch:?} at position {index} is not in Latin-1 (ISO 8859-1)")]
pub struct NotLatin1 {
    /// The offending character.
    pub ch: char,
    /// Its position, counted in characters.
    pub index: usize,
}

/// Appends the unpacked septets of one character (one, or ESC and one); false when the
/// character is not in GSM 03.38.
pub(crate) fn push_gsm_char(c: char, out: &mut Vec<u8>) -> bool {
    if let Some(septet) = base_septet(c) {
        out.push(septet);
        true
    } else if let Some(septet) = extension_septet(c) {
        out.push(ESCAPE);
        out.push(septet);
        true
    } else {
        false
    }
}

/// GSM 03.38 text as unpacked septets, one per octet, extension characters as `1B xx`: the
/// form SMPP carries with data_coding 0.
pub fn encode_unpacked(text: &str) -> Result<Vec<u8>, NotGsm> {
    let mut out = Vec::with_capacity(text.len());
    for (index, ch) in text.chars().enumerate() {
        if !push_gsm_char(ch, &mut out) {
            return Err(NotGsm { ch, index });
        }
    }
    Ok(out)
}

/// Unpacked septets back to text. Never panics: an octet above 0x7F becomes U+FFFD; an escape
/// to a septet the extension table does not define shows the default-alphabet character of
/// that septet (as TS 23.038 asks of handsets); ESC ESC and a trailing ESC show a space.
pub fn decode_unpacked(octets: &[u8]) -> String {
    let mut text = String::with_capacity(octets.len());
    let mut rest = octets.iter();
    while let Some(&octet) = rest.next() {
        if octet != ESCAPE {
            text.push(base_char(octet));
            continue;
        }
        match rest.next() {
            None | Some(&ESCAPE) => text.push(' '),
            Some(&next) => match EXTENSION_TABLE.iter().find(|(septet, _)| *septet == next) {
                Some((_, ch)) => text.push(*ch),
                None => text.push(base_char(next)),
            },
        }
    }
    text
}

/// The default-alphabet character of an octet; U+FFFD above 0x7F.
fn base_char(octet: u8) -> char {
    DEFAULT_ALPHABET
        .get(usize::from(octet))
        .copied()
        .unwrap_or(REPLACEMENT)
}

/// Fill bits after a user data header of `udh_octets` octets (UDHL byte included) so that the
/// first septet starts on a septet boundary: 1 for the usual 6-octet header, 0 for 7.
pub fn fill_bits_for_udh(udh_octets: usize) -> u8 {
    let fill = (7 - (udh_octets * 8) % 7) % 7;
    u8::try_from(fill).unwrap_or(0)
}

/// Packs septets 7 bits each, least significant bit first (TS 23.038 §6.1.2.1), after
/// `fill_bits` zero bits (see [`fill_bits_for_udh`]). Only the low 7 bits of each input octet
/// are used.
pub fn pack_septets(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let total_bits = usize::from(fill_bits) + septets.len() * 7;
    let mut out = Vec::with_capacity(total_bits.div_ceil(8));
    let mut accumulator: u32 = 0;
    let mut bits: u32 = u32::from(fill_bits);
    // Fill bits beyond a whole octet are whole zero octets.
    while bits >= 8 {
        out.push(0);
        bits -= 8;
    }
    for &septet in septets {
        accumulator |= u32::from(septet & 0x7F) << bits;
        bits += 7;
        while bits >= 8 {
            out.push((accumulator & 0xFF) as u8);
            accumulator >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push((accumulator & 0xFF) as u8);
    }
    out
}

/// Unpacks up to `septet_count` septets from 7-bit packed octets that start with `fill_bits`
/// bits to skip. The count comes from the message (TP-UDL); packed octets alone cannot tell
/// seven septets from eight. Stops early, never panics, when the octets run out.
pub fn unpack_septets(packed: &[u8], fill_bits: u8, septet_count: usize) -> Vec<u8> {
    let available_bits = (packed.len() * 8).saturating_sub(usize::from(fill_bits));
    let count = septet_count.min(available_bits / 7);
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let bit = usize::from(fill_bits) + index * 7;
        let (octet, shift) = (bit / 8, bit % 8);
        let low = u16::from(packed.get(octet).copied().unwrap_or(0));
        let high = u16::from(packed.get(octet + 1).copied().unwrap_or(0));
        let both = low | (high << 8);
        out.push(((both >> shift) & 0x7F) as u8);
    }
    out
}

/// Text as UCS-2 on the wire: UTF-16BE, with surrogate pairs for characters beyond the BMP
/// (emoji), as handsets and SMSCs accept under data_coding 8.
pub fn encode_ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// UTF-16BE back to text. Never panics: an odd trailing octet or an unpaired surrogate becomes
/// U+FFFD.
pub fn decode_ucs2(octets: &[u8]) -> String {
    let pairs = octets.chunks_exact(2);
    let odd = !pairs.remainder().is_empty();
    let code_units = pairs.map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    let mut text: String = char::decode_utf16(code_units)
        .map(|unit| unit.unwrap_or(REPLACEMENT))
        .collect();
    if odd {
        text.push(REPLACEMENT);
    }
    text
}

/// Text as Latin-1 (ISO 8859-1, data_coding 3), when every character is in it.
pub fn encode_latin1(text: &str) -> Result<Vec<u8>, NotLatin1> {
    text.chars()
        .enumerate()
        .map(|(index, ch)| u8::try_from(ch).map_err(|_| NotLatin1 { ch, index }))
        .collect()
}

/// Latin-1 back to text; every octet is a character, so this cannot fail.
pub fn decode_latin1(octets: &[u8]) -> String {
    octets.iter().map(|&octet| char::from(octet)).collect()
}

/// The SMPP 3.4 `data_coding` values a gateway sends or receives text with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataCoding {
    /// 0x00, "SMSC default alphabet": GSM 03.38 unpacked septets, one per octet.
    SmscDefaultGsm,
    /// 0x01, IA5 (ASCII) by the SMPP letter. Operators that ask for 1 (see [`GsmCoding::One`])
    /// expect the same GSM 03.38 unpacked septets as under 0, so this crate writes and reads
    /// GSM 03.38 under 1 too. Letters, digits, space and most punctuation are the same octets
    /// in both; `@ $ _` and the accented letters are not.
    Ia5,
    /// 0x03, Latin-1 (ISO 8859-1), one octet per character.
    Latin1,
    /// 0x04, 8-bit binary data: not text.
    Octet,
    /// 0x08, UCS-2 (UTF-16BE with surrogate pairs).
    Ucs2,
}

/// Which `data_coding` an operator wants on text in the GSM 03.38 alphabet; the octets are the
/// same unpacked septets either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GsmCoding {
    /// data_coding 0 (SMSC default): what most operators want.
    #[default]
    Zero,
    /// data_coding 1 (IA5): what some operators insist on for 7-bit text.
    One,
}

/// Why a text cannot be written in a given data_coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A character outside the coding's repertoire.
    #[error("character {ch:?} at position {index} cannot be sent with data_coding {coding:?}")]
    NotRepresentable {
        /// The offending character.
        ch: char,
        /// Its position, counted in characters.
        index: usize,
        /// The coding that lacks it.
        coding: DataCoding,
    },
    /// data_coding 4 carries binary data, not text.
    #[error("data_coding 4 (8-bit binary) carries data, not text")]
    NotText,
}

impl DataCoding {
    /// The coding for a `data_coding` octet; `None` for values this gateway does not handle
    /// (national codings, message-class groups, reserved values).
    pub fn from_byte(byte: u8) -> Option<DataCoding> {
        match byte {
            0x00 => Some(DataCoding::SmscDefaultGsm),
            0x01 => Some(DataCoding::Ia5),
            0x03 => Some(DataCoding::Latin1),
            0x04 => Some(DataCoding::Octet),
            0x08 => Some(DataCoding::Ucs2),
            _ => None,
        }
    }

    /// The coding of an inbound `data_coding` (deliver_sm): the SMPP values first (and 0x02,
    /// 8-bit binary), then the TS 23.038 data coding scheme groups an SMSC may pass through
    /// from the handset (message class or flash: 0x10-0x1F, 0x40-0x5F, 0xF0-0xFF; message
    /// waiting: 0xC0-0xEF). `None` for compressed text, national codings and reserved values.
    pub fn from_inbound(byte: u8) -> Option<DataCoding> {
        if let Some(coding) = DataCoding::from_byte(byte) {
            return Some(coding);
        }
        // Bits 3-2 of the general data coding groups name the alphabet.
        let alphabet = match byte & 0x0C {
            0x00 => Some(DataCoding::SmscDefaultGsm),
            0x04 => Some(DataCoding::Octet),
            0x08 => Some(DataCoding::Ucs2),
            _ => None,
        };
        match byte {
            0x02 => Some(DataCoding::Octet),
            // General data coding, uncompressed (with or without automatic deletion).
            0x10..=0x1F | 0x40..=0x5F => alphabet,
            // Message waiting indication: discard or store, GSM alphabet.
            0xC0..=0xDF => Some(DataCoding::SmscDefaultGsm),
            // Message waiting indication: store, UCS-2.
            0xE0..=0xEF => Some(DataCoding::Ucs2),
            // Data coding / message class: bit 2 chooses 8-bit data over GSM.
            0xF0..=0xFF if byte & 0x04 != 0 => Some(DataCoding::Octet),
            0xF0..=0xFF => Some(DataCoding::SmscDefaultGsm),
            _ => None,
        }
    }

    /// The `data_coding` octet.
    pub fn to_byte(self) -> u8 {
        match self {
            DataCoding::SmscDefaultGsm => 0x00,
            DataCoding::Ia5 => 0x01,
            DataCoding::Latin1 => 0x03,
            DataCoding::Octet => 0x04,
            DataCoding::Ucs2 => 0x08,
        }
    }

    /// The coding for a text: GSM 03.38 (as data_coding 0 or 1, per `gsm_coding`) when every
    /// character is in it, UCS-2 otherwise. Latin-1 is never chosen: use it only where an
    /// operator asks for it.
    pub fn choose(text: &str, gsm_coding: GsmCoding) -> DataCoding {
        match (encoding_for(text), gsm_coding) {
            (Encoding::Ucs2, _) => DataCoding::Ucs2,
            (Encoding::Gsm7, GsmCoding::Zero) => DataCoding::SmscDefaultGsm,
            (Encoding::Gsm7, GsmCoding::One) => DataCoding::Ia5,
        }
    }

    /// Whether text under this coding is GSM 03.38 septets.
    pub fn is_gsm(self) -> bool {
        matches!(self, DataCoding::SmscDefaultGsm | DataCoding::Ia5)
    }

    /// The whole text in this coding's octets (GSM unpacked, Latin-1 or UTF-16BE).
    pub fn encode(self, text: &str) -> Result<Vec<u8>, EncodeError> {
        match self {
            DataCoding::SmscDefaultGsm | DataCoding::Ia5 => {
                encode_unpacked(text).map_err(|NotGsm { ch, index }| {
                    EncodeError::NotRepresentable {
                        ch,
                        index,
                        coding: self,
                    }
                })
            }
            DataCoding::Latin1 => encode_latin1(text).map_err(|NotLatin1 { ch, index }| {
                EncodeError::NotRepresentable {
                    ch,
                    index,
                    coding: self,
                }
            }),
            DataCoding::Ucs2 => Ok(encode_ucs2(text)),
            DataCoding::Octet => Err(EncodeError::NotText),
        }
    }

    /// Octets in this coding back to text; `None` for binary data (data_coding 4). Never
    /// panics on any input.
    pub fn decode(self, octets: &[u8]) -> Option<String> {
        match self {
            DataCoding::SmscDefaultGsm | DataCoding::Ia5 => Some(decode_unpacked(octets)),
            DataCoding::Latin1 => Some(decode_latin1(octets)),
            DataCoding::Ucs2 => Some(decode_ucs2(octets)),
            DataCoding::Octet => None,
        }
    }
}

/// Shorthand for [`DataCoding::choose`].
pub fn choose(text: &str, gsm_coding: GsmCoding) -> DataCoding {
    DataCoding::choose(text, gsm_coding)
}

impl TryFrom<u8> for DataCoding {
    type Error = u8;

    /// The coding for a `data_coding` octet; the octet back when it is not handled.
    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        DataCoding::from_byte(byte).ok_or(byte)
    }
}

impl From<DataCoding> for u8 {
    fn from(coding: DataCoding) -> u8 {
        coding.to_byte()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_code_point_in_place() {
        // Spot checks against TS 23.038 §6.2.1, one per row.
        assert_eq!(DEFAULT_ALPHABET[0x00], '@');
        assert_eq!(DEFAULT_ALPHABET[0x02], '$');
        assert_eq!(DEFAULT_ALPHABET[0x11], '_');
        assert_eq!(DEFAULT_ALPHABET[0x24], '¤');
        assert_eq!(DEFAULT_ALPHABET[0x40], '¡');
        assert_eq!(DEFAULT_ALPHABET[0x5F], '§');
        assert_eq!(DEFAULT_ALPHABET[0x60], '¿');
        assert_eq!(DEFAULT_ALPHABET[0x7F], 'à');
        // Every character but ESC encodes to its own position.
        for (index, &ch) in DEFAULT_ALPHABET.iter().enumerate() {
            if index == usize::from(ESCAPE) {
                assert_eq!(base_septet(ch), None, "ESC is not a character");
            } else {
                assert_eq!(base_septet(ch), Some(index as u8), "{ch:?}");
            }
        }
    }

    #[test]
    fn hello_is_its_ascii_octets_unpacked() {
        // H=0x48 e=0x65 l=0x6C l=0x6C o=0x6F: the same positions as ASCII.
        assert_eq!(
            encode_unpacked("Hello"),
            Ok(vec![0x48, 0x65, 0x6C, 0x6C, 0x6F])
        );
    }

    #[test]
    fn ascii_look_alikes_that_differ_in_gsm() {
        // '@' is 0x00, '$' 0x02, '_' 0x11 in GSM 03.38 (not 0x40, 0x24, 0x5F as in ASCII).
        assert_eq!(encode_unpacked("@$_"), Ok(vec![0x00, 0x02, 0x11]));
        assert_eq!(decode_unpacked(&[0x40, 0x24]), "¡¤");
    }

    #[test]
    fn extension_characters_are_escape_pairs() {
        // € is ESC 0x65; [ is ESC 0x3C; form feed ESC 0x0A.
        assert_eq!(encode_unpacked("€"), Ok(vec![0x1B, 0x65]));
        assert_eq!(encode_unpacked("a[b"), Ok(vec![0x61, 0x1B, 0x3C, 0x62]));
        assert_eq!(encode_unpacked("\u{C}"), Ok(vec![0x1B, 0x0A]));
        for (septet, ch) in EXTENSION_TABLE {
            assert_eq!(decode_unpacked(&[ESCAPE, septet]), ch.to_string());
            assert_eq!(septets(ch), Some(2));
        }
    }

    #[test]
    fn non_gsm_characters_are_reported_with_their_char_index() {
        assert_eq!(
            encode_unpacked("añ😀"),
            Err(NotGsm {
                ch: '😀', index: 2
            })
        );
        assert_eq!(encode_unpacked("ç"), Err(NotGsm { ch: 'ç', index: 0 }));
    }

    #[test]
    fn odd_escapes_decode_as_handsets_show_them() {
        // Unknown extension septet 0x41: the base character 'A'.
        assert_eq!(decode_unpacked(&[0x1B, 0x41]), "A");
        // ESC ESC and a trailing ESC: a space.
        assert_eq!(decode_unpacked(&[0x1B, 0x1B, 0x61]), " a");
        assert_eq!(decode_unpacked(&[0x61, 0x1B]), "a ");
        // Octets above 0x7F are not septets.
        assert_eq!(decode_unpacked(&[0x80, 0x1B, 0xFF]), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn hellohello_packs_as_in_ts_23_038() {
        // The worked example of TS 23.038 §6.1.2.1.1: "hellohello" → E8 32 9B FD 46 97 D9 EC 37.
        let unpacked = encode_unpacked("hellohello").unwrap_or_default();
        let packed = pack_septets(&unpacked, 0);
        assert_eq!(
            packed,
            vec![0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
        assert_eq!(unpack_septets(&packed, 0, 10), unpacked);
    }

    #[test]
    fn fill_bits_align_septets_after_a_udh() {
        // 6-octet UDH = 48 bits; one fill bit makes 49 = 7 × 7.
        assert_eq!(fill_bits_for_udh(6), 1);
        assert_eq!(fill_bits_for_udh(7), 0);
        assert_eq!(fill_bits_for_udh(0), 0);
        // 'A' (0x41) after one fill bit: 0x41 << 1 = 0x82.
        assert_eq!(pack_septets(&[0x41], 1), vec![0x82]);
        assert_eq!(unpack_septets(&[0x82], 1, 1), vec![0x41]);
        // 153 septets after a 6-octet UDH fill the 134 octets left of 140 exactly.
        assert_eq!(pack_septets(&[0x61; 153], 1).len(), 134);
    }

    #[test]
    fn unpack_stops_when_octets_run_out() {
        assert_eq!(unpack_septets(&[], 0, 5), Vec::<u8>::new());
        assert_eq!(unpack_septets(&[0xFF], 3, 5).len(), 0);
        assert_eq!(unpack_septets(&[0xFF, 0xFF], 0, 5).len(), 2);
    }

    #[test]
    fn ucs2_is_utf16_big_endian_with_surrogates() {
        // 'é' U+00E9 → 00 E9; '😀' U+1F600 → D8 3D DE 00.
        assert_eq!(encode_ucs2("é😀"), vec![0x00, 0xE9, 0xD8, 0x3D, 0xDE, 0x00]);
        assert_eq!(decode_ucs2(&[0x00, 0xE9, 0xD8, 0x3D, 0xDE, 0x00]), "é😀");
    }

    #[test]
    fn broken_ucs2_becomes_replacement_characters() {
        // A lone high surrogate, then an odd trailing octet.
        assert_eq!(
            decode_ucs2(&[0xD8, 0x3D, 0x00, 0x41, 0x00]),
            "\u{FFFD}A\u{FFFD}"
        );
        assert_eq!(decode_ucs2(&[0xDE, 0x00]), "\u{FFFD}");
    }

    #[test]
    fn latin1_only_where_representable() {
        assert_eq!(encode_latin1("café"), Ok(vec![0x63, 0x61, 0x66, 0xE9]));
        assert_eq!(
            encode_latin1("5€"),
            Err(NotLatin1 {
                ch: '€', index: 1
            })
        );
        assert_eq!(decode_latin1(&[0x63, 0xE9]), "cé");
    }

    #[test]
    fn data_coding_bytes_round_trip() {
        for coding in [
            DataCoding::SmscDefaultGsm,
            DataCoding::Ia5,
            DataCoding::Latin1,
            DataCoding::Octet,
            DataCoding::Ucs2,
        ] {
            assert_eq!(DataCoding::from_byte(coding.to_byte()), Some(coding));
            assert_eq!(DataCoding::try_from(u8::from(coding)), Ok(coding));
        }
        assert_eq!(DataCoding::from_byte(0x02), None);
        assert_eq!(DataCoding::try_from(0xF0), Err(0xF0));
    }

    #[test]
    fn inbound_data_coding_reads_dcs_groups() {
        // SMPP values win over the DCS reading of 0x00-0x0F (0x03 is Latin-1 in SMPP).
        assert_eq!(DataCoding::from_inbound(0x03), Some(DataCoding::Latin1));
        assert_eq!(DataCoding::from_inbound(0x02), Some(DataCoding::Octet));
        // 0x10 flash GSM, 0x18 flash UCS-2, 0x11 class 1 GSM, 0x15 class 1 8-bit.
        assert_eq!(
            DataCoding::from_inbound(0x10),
            Some(DataCoding::SmscDefaultGsm)
        );
        assert_eq!(DataCoding::from_inbound(0x18), Some(DataCoding::Ucs2));
        assert_eq!(
            DataCoding::from_inbound(0x11),
            Some(DataCoding::SmscDefaultGsm)
        );
        assert_eq!(DataCoding::from_inbound(0x15), Some(DataCoding::Octet));
        // 0x1C: reserved alphabet; 0x20: compressed.
        assert_eq!(DataCoding::from_inbound(0x1C), None);
        assert_eq!(DataCoding::from_inbound(0x20), None);
        // 0xF0 class 0 GSM, 0xF6 class 2 8-bit, 0xC8 message waiting GSM, 0xE0 UCS-2.
        assert_eq!(
            DataCoding::from_inbound(0xF0),
            Some(DataCoding::SmscDefaultGsm)
        );
        assert_eq!(DataCoding::from_inbound(0xF6), Some(DataCoding::Octet));
        assert_eq!(
            DataCoding::from_inbound(0xC8),
            Some(DataCoding::SmscDefaultGsm)
        );
        assert_eq!(DataCoding::from_inbound(0xE0), Some(DataCoding::Ucs2));
        // National codings and reserved groups.
        assert_eq!(DataCoding::from_inbound(0x06), None);
        assert_eq!(DataCoding::from_inbound(0x80), None);
    }

    #[test]
    fn choose_follows_the_operator_setting_for_gsm_text() {
        assert_eq!(
            choose("Habari €", GsmCoding::Zero),
            DataCoding::SmscDefaultGsm
        );
        assert_eq!(choose("Habari €", GsmCoding::One), DataCoding::Ia5);
        assert_eq!(choose("Habari 😀", GsmCoding::One), DataCoding::Ucs2);
        assert_eq!(choose("ç", GsmCoding::Zero), DataCoding::Ucs2);
    }

    #[test]
    fn data_coding_encode_and_decode() {
        assert_eq!(DataCoding::Ia5.encode("@"), Ok(vec![0x00]));
        assert_eq!(
            DataCoding::SmscDefaultGsm.encode("😀"),
            Err(EncodeError::NotRepresentable {
                ch: '😀',
                index: 0,
                coding: DataCoding::SmscDefaultGsm
            })
        );
        assert_eq!(DataCoding::Octet.encode("x"), Err(EncodeError::NotText));
        assert_eq!(DataCoding::Octet.decode(&[1, 2]), None);
        assert_eq!(DataCoding::Ucs2.decode(&[0, 0x41]), Some("A".to_string()));
    }

    #[test]
    fn the_ascii_table_agrees_with_the_alphabet_for_every_ascii_character() {
        for byte in 0u8..128 {
            let c = char::from(byte);
            assert_eq!(
                ASCII_SEPTETS[usize::from(byte)],
                septets(c).unwrap_or(0),
                "{c:?}"
            );
        }
        // The ones that differ from plain ASCII positions, spelt out.
        assert_eq!(ASCII_SEPTETS[usize::from(b'`')], 0);
        assert_eq!(ASCII_SEPTETS[0x1B], 0);
        assert_eq!(ASCII_SEPTETS[usize::from(b'$')], 1);
        assert_eq!(ASCII_SEPTETS[usize::from(b'^')], 2);
        assert_eq!(ASCII_SEPTETS[0x0C], 2);
    }

    proptest::proptest! {
        /// The byte-at-a-time paths give what the character-at-a-time definitions give.
        #[test]
        fn fast_paths_match_the_definitions(text in "[\\x00-\\x7F]{0,40}(\\PC|[€é😀`^]){0,5}[\\x00-\\x7F]{0,10}") {
            let by_char = text.chars().enumerate().find(|(_, c)| septets(*c).is_none());
            proptest::prop_assert_eq!(first_non_gsm(&text), by_char);
            let septet_sum: usize = text.chars().map(|c| usize::from(septets(c).unwrap_or(1))).sum();
            proptest::prop_assert_eq!(units(&text, Encoding::Gsm7), septet_sum);
        }
    }

    #[test]
    fn existing_api_keeps_its_meaning() {
        assert_eq!(septets('a'), Some(1));
        assert_eq!(septets('€'), Some(2));
        assert_eq!(septets('\u{1B}'), None);
        assert_eq!(septets('😀'), None);
        assert_eq!(first_non_gsm("ab😀c"), Some((2, '😀')));
        assert_eq!(units("a€", Encoding::Gsm7), 3);
        assert_eq!(units("a😀", Encoding::Ucs2), 3);
        let info = sms_info(&"a".repeat(160));
        assert_eq!(
            (info.encoding, info.units, info.segments),
            (Encoding::Gsm7, 160, 1)
        );
        assert_eq!(sms_info(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_info(&"é".repeat(70)).segments, 1);
        assert_eq!(sms_info(&"ç".repeat(71)).segments, 2);
        assert_eq!(sms_info("").segments, 1);
        assert_eq!(ussd_limit(Encoding::Gsm7), 182);
        assert_eq!(ussd_limit(Encoding::Ucs2), 80);
    }

    #[test]
    fn sms_info_counts_an_escape_pair_that_cannot_straddle() {
        // 154 septets fit one part of 160: no split at all.
        assert_eq!(sms_info(&format!("{}€", "a".repeat(152))).segments, 1);
        // 152 'a' + '€' + 152 'a' = 306 septets; naively ceil(306 / 153) = 2. The pair cannot
        // take septets 153-154, so part one holds 152, part two '€' + 151 'a', part three 'a'.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(units(&text, Encoding::Gsm7), 306);
        assert_eq!(sms_info(&text).segments, 3);
        // Without the straddle, 306 septets are 2 parts.
        assert_eq!(sms_info(&format!("€{}", "a".repeat(304))).segments, 2);
    }

    #[test]
    fn sms_info_counts_a_surrogate_pair_that_cannot_straddle() {
        // 66 'ç' + '😀' + 66 'ç' = 134 UTF-16 units; naively ceil(134 / 67) = 2. The pair
        // cannot take units 67-68, so part one holds 66 units, part two the emoji + 65 'ç',
        // part three one 'ç'.
        let text = format!("{}😀{}", "ç".repeat(66), "ç".repeat(66));
        assert_eq!(units(&text, Encoding::Ucs2), 134);
        assert_eq!(sms_info(&text).segments, 3);
        assert_eq!(sms_info(&format!("😀{}", "ç".repeat(132))).segments, 2);
    }
}
