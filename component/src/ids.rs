//! Hex text and random identifiers (upload sessions, request ids, GitHub
//! Actions cache entries), from the host's random source.

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `2 * bytes` hex digits from the host's random source.
pub fn random_hex(bytes: u64) -> String {
    hex(&wasip2::random::random::get_random_bytes(bytes))
}

/// A random UUID (version 4) in its usual text form, as Azure's
/// `x-ms-request-id` carries one.
pub fn random_uuid() -> String {
    let mut bytes = wasip2::random::random::get_random_bytes(16);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let text = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &text[..8],
        &text[8..12],
        &text[12..16],
        &text[16..20],
        &text[20..]
    )
}
