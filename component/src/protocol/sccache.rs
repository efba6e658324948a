//! The WebDAV subset sccache speaks (`SCCACHE_WEBDAV_ENDPOINT=http://host/sccache`):
//! files are `GET|HEAD|PUT|DELETE` under `/sccache/`, collections are answered
//! by `PROPFIND` and `MKCOL`.
//!
//! Before each upload sccache (through OpenDAL) asks `PROPFIND` with
//! `Depth: 0` for the file's parent collection and creates each missing level
//! with `MKCOL`. Collections here are implied by the keys under them, as in
//! an object store: every collection exists, so `PROPFIND` on one answers a
//! 207 multistatus saying so and `MKCOL` answers 201. A path ending in `/` is
//! a collection, any other a file. `SCCACHE_WEBDAV_KEY_PREFIX` adds leading
//! segments; the first of several is the namespace tokens are scoped to.
//! sccache's keys are not content hashes: nothing is verified.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::auth::{Caller, Need, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::BlobInfo;
use crate::blob;
use crate::error::{Failure, Kind};
use crate::http::body::read_small;
use crate::http::{http_date, Request, Response};
use crate::route::{Endpoint, PathRules, Protocol, Root};

use super::{leading_namespace, render_text};

pub static PROTOCOL: Protocol = Protocol {
    name: "sccache",
    root: Root::Segment("sccache"),
    paths: PathRules::Collections,
    parse: |rest| Ok(Box::new(parse(rest))),
    render: render_text,
};

/// Largest `PROPFIND` body read (sccache's is 91 bytes).
const MAX_PROPFIND_BODY: usize = 64 << 10;

const FILE_METHODS: &str = "GET, HEAD, PUT, DELETE, PROPFIND, OPTIONS";
const COLLECTION_METHODS: &str = "PROPFIND, MKCOL, OPTIONS";

#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// The segments after `/sccache`, without the collection marker.
    pub segments: Vec<String>,
    /// The path ended in `/` (or is the root).
    pub is_collection: bool,
}

impl Resource {
    /// `sccache/<path>` for files.
    pub fn store_key(&self) -> String {
        format!("sccache/{}", self.segments.join("/"))
    }

    /// The path as a client would address it again, for `href`.
    fn href(&self) -> String {
        let mut href = String::from("/sccache/");
        href.push_str(&self.segments.join("/"));
        if self.is_collection && !self.segments.is_empty() {
            href.push('/');
        }
        href
    }
}

/// `rest` is the path after `/sccache`; a last empty segment marks a collection.
pub fn parse(rest: &[&str]) -> Resource {
    let (segments, is_collection) = match rest.split_last() {
        None => (rest, true),
        Some((&"", init)) => (init, true),
        Some(_) => (rest, false),
    };
    Resource {
        segments: segments.iter().map(|s| s.to_string()).collect(),
        is_collection,
    }
}

impl Endpoint for Resource {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        let need = match request.method() {
            "OPTIONS" => Need::Nothing,
            "PUT" | "DELETE" | "MKCOL" => Need::Write,
            _ => Need::Read,
        };
        // A collection's own name counts: `/sccache/team-a/` is in `team-a`.
        let mut segments: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        if self.is_collection {
            segments.push("");
        }
        Scope::in_path(need, leading_namespace(&segments))
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        let allowed = match self.is_collection {
            true => COLLECTION_METHODS,
            false => FILE_METHODS,
        };
        match (request.method(), self.is_collection) {
            ("OPTIONS", _) => Ok(Response::empty(200)
                .with_header("dav", "1")
                .with_header("allow", allowed)),
            ("PROPFIND", _) => propfind(request, self),
            ("MKCOL", true) => {
                // A body would ask for more than an empty collection.
                if request.content_length().ok().flatten().unwrap_or(0) > 0 {
                    return Err(Failure::new(
                        Kind::UnsupportedMediaType,
                        "MKCOL with a body is not supported",
                    ));
                }
                Ok(Response::empty(201))
            }
            ("GET" | "HEAD", false) => blob::read(request, &self.store_key()),
            ("PUT", false) => {
                blob::overwrite(request, &self.store_key())?;
                Ok(Response::empty(201))
            }
            ("DELETE", false) => {
                blob::delete(&self.store_key())?;
                Ok(Response::empty(204))
            }
            _ => Err(Failure::method_not_allowed(allowed)),
        }
    }
}

/// `PROPFIND` with `Depth: 0`: a 207 multistatus with one response and one
/// propstat, the shape OpenDAL reads; 404 for a file that is not stored.
fn propfind(request: &Request, resource: &Resource) -> Result<Response, Failure> {
    let depth = request.header("depth").unwrap_or_else(|| "infinity".into());
    check_propfind_body(&read_small(request, MAX_PROPFIND_BODY)?)?;
    let props = if resource.is_collection {
        if depth.trim() != "0" {
            return Err(Failure::new(
                Kind::Forbidden,
                "PROPFIND on a collection is served with Depth: 0 only",
            ));
        }
        collection_props()
    } else {
        // A file has no members: every depth is depth 0.
        file_props(&store::head(&resource.store_key())?)
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{}</D:href>\
         <D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status>\
         </D:propstat></D:response></D:multistatus>\n",
        resource.href()
    );
    Ok(Response::bytes(
        207,
        "application/xml; charset=utf-8",
        body.into_bytes(),
    ))
}

/// An empty body means `allprop`; otherwise it must be one well-formed XML
/// document whose root is `propfind` (any namespace prefix).
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub fn check_propfind_body(body: &[u8]) -> Result<(), Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let broken = |why: &str| Failure::bad_request(format!("PROPFIND body is not XML: {why}"));
    let mut reader = Reader::from_reader(body);
    let mut root: Option<Vec<u8>> = None;
    let mut open = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| broken(&e.to_string()))?;
        match &event {
            Event::Start(element) | Event::Empty(element) if open == 0 => {
                if root.is_some() {
                    return Err(broken("more than one root element"));
                }
                root = Some(element.local_name().as_ref().to_vec());
                open += usize::from(matches!(event, Event::Start(_)));
            }
            Event::Start(_) => open += 1,
            Event::End(_) => open = open.saturating_sub(1),
            Event::Text(text) if open == 0 && !text.iter().all(u8::is_ascii_whitespace) => {
                return Err(broken("text outside the root element"));
            }
            Event::Eof if open > 0 => return Err(broken("an element is not closed")),
            Event::Eof => break,
            _ => {}
        }
    }
    match root.as_deref() {
        Some(b"propfind") => Ok(()),
        Some(_) => Err(Failure::bad_request(
            "PROPFIND body's root element is not propfind",
        )),
        None => Err(broken("no root element")),
    }
}

/// Collections are implied by keys, so they have no time of their own: the
/// epoch stands in for `getlastmodified`, which OpenDAL requires.
fn collection_props() -> String {
    let epoch = http_date(0).unwrap_or_default();
    format!(
        "<D:resourcetype><D:collection/></D:resourcetype>\
         <D:getlastmodified>{epoch}</D:getlastmodified>"
    )
}

fn file_props(info: &BlobInfo) -> String {
    let modified = http_date(info.last_modified).unwrap_or_default();
    let etag = xml_escape(&info.etag);
    format!(
        "<D:resourcetype/><D:getcontentlength>{}</D:getcontentlength>\
         <D:getlastmodified>{modified}</D:getlastmodified><D:getetag>{etag}</D:getetag>",
        info.size
    )
}

fn xml_escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_collections() {
        let file = parse(&["team-a", "9", "c", "2", "9c2f"]);
        assert!(!file.is_collection);
        assert_eq!(file.store_key(), "sccache/team-a/9/c/2/9c2f");
        let collection = parse(&["team-a", "9", ""]);
        assert!(collection.is_collection);
        assert_eq!(collection.href(), "/sccache/team-a/9/");
        assert!(parse(&[]).is_collection);
        assert_eq!(parse(&[""]).href(), "/sccache/");
        assert_eq!(
            parse(&[".sccache_check"]).store_key(),
            "sccache/.sccache_check"
        );
    }

    #[test]
    fn propfind_bodies() {
        let sccache = br#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
        assert!(check_propfind_body(sccache).is_ok());
        assert!(check_propfind_body(b"").is_ok());
        assert!(
            check_propfind_body(b"<propfind xmlns='DAV:'><prop><getetag/></prop></propfind>")
                .is_ok()
        );
        for broken in [
            &b"<D:propfind xmlns:D=\"DAV:\"><D:allprop/>"[..],
            b"<a></b>",
            b"not xml",
            b"<D:propertyupdate xmlns:D=\"DAV:\"/>",
            b"<propfind/><propfind/>",
        ] {
            let failure = check_propfind_body(broken).unwrap_err();
            assert_eq!(failure.status(), 400, "{}", String::from_utf8_lossy(broken));
        }
    }
}
