//! Helpers the fuzz targets share: drawing bounded strings from the input.

pub use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};

/// Up to `max` bytes of `alphabet`, as text (`alphabet` is ASCII).
pub fn from_alphabet(u: &mut Unstructured<'_>, alphabet: &[u8], max: usize) -> String {
    let len = u.int_in_range(0..=max).unwrap_or(0);
    (0..len)
        .map(|_| {
            let i = u.choose_index(alphabet.len()).unwrap_or(0);
            alphabet[i] as char
        })
        .collect()
}

/// Any string of at most `max` bytes (arbitrary UTF-8).
pub fn any_text(u: &mut Unstructured<'_>, max: usize) -> String {
    let s: String = u.arbitrary().unwrap_or_default();
    truncate(s, max)
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The first eight bytes of `data` as a little-endian number (zeros past its end).
pub fn leading_u64(data: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = data.len().min(8);
    bytes[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(bytes)
}

/// One of `choices`.
pub fn pick<'a>(u: &mut Unstructured<'_>, choices: &[&'a str]) -> &'a str {
    choices[u.choose_index(choices.len()).unwrap_or(0)]
}

pub const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub const KEY_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~:+=@-";
/// Key characters plus what tends to break parsers of paths and queries.
pub const PATH_CHARS: &[u8] = b"abcAZ09._~:+=@-/%?&#; \t\\\"'<>2Ff";
pub const PRINTABLE: &[u8] = b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/// Percent-encodes every byte of `text` (`%XX`).
pub fn percent_encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}
