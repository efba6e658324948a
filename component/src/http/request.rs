//! Read access to an incoming request: method, path, query, headers.

use wasip2::http::types::{IncomingRequest, Method};

/// An incoming request and what is read from it more than once.
pub struct Request {
    inner: IncomingRequest,
    method: String,
    path_with_query: String,
}

impl Request {
    pub fn new(inner: IncomingRequest) -> Request {
        let method = match inner.method() {
            Method::Get => "GET".into(),
            Method::Head => "HEAD".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Connect => "CONNECT".into(),
            Method::Options => "OPTIONS".into(),
            Method::Trace => "TRACE".into(),
            Method::Patch => "PATCH".into(),
            Method::Other(other) => other,
        };
        let path_with_query = inner.path_with_query().unwrap_or_default();
        Request {
            inner,
            method,
            path_with_query,
        }
    }

    /// The method in upper case, as sent.
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Path and query as sent (still percent-encoded).
    pub fn path_with_query(&self) -> &str {
        &self.path_with_query
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// The raw (still percent-encoded) value of the first `name=` query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The first `name=` query parameter, percent-decoded (`sha256%3A...`
    /// becomes `sha256:...`). A malformed escape is kept as sent, so the
    /// caller's own checks refuse it.
    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query_param(name).map(percent_decode)
    }

    /// The first value of a header, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.inner.headers().get(name);
        values
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok())
    }

    /// The declared body length: none when absent (chunked), an error when malformed.
    pub fn content_length(&self) -> Result<Option<u64>, String> {
        match self.header("content-length") {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("content-length {value:?} is not a number")),
        }
    }

    /// Every header, as the `http` crate's map (what Shared Key signs over).
    /// Headers that are not valid HTTP text are left out.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in self.inner.headers().entries() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&value),
            ) {
                map.append(name, value);
            }
        }
        map
    }

    /// `scheme://authority` the request was sent to, for URLs that point back
    /// at this server; `BLOBCACHE_PUBLIC_URL` overrides it behind a proxy.
    pub fn origin(&self) -> String {
        if let Some(url) = crate::config::public_url() {
            return url;
        }
        let scheme = match self.inner.scheme() {
            Some(wasip2::http::types::Scheme::Https) => "https",
            _ => "http",
        };
        let authority = self
            .inner
            .authority()
            .or_else(|| self.header("host"))
            .unwrap_or_else(|| "localhost".into());
        format!("{scheme}://{authority}")
    }

    /// The underlying request, for reading its body.
    pub fn incoming(&self) -> &IncomingRequest {
        &self.inner
    }
}

/// `%XX` escapes decoded strictly: none when an escape is malformed or the
/// result is not UTF-8 (for names that become keys).
pub fn percent_decode_strict(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `%XX` escapes decoded; anything that does not decode to UTF-8 is kept as sent.
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
        assert_eq!(percent_decode("team-a%2Fapp"), "team-a/app");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(percent_decode("%+f"), "%+f");
    }
}
