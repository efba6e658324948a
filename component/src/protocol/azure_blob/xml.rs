//! The XML documents of the Azure Blob REST subset the endpoint serves: the
//! block list a client commits (parsed), and the Get Block List, List Blobs and
//! error answers (rendered). Pure: tested natively.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One entry of a Put Block List body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListedBlock {
    /// `<Latest>` or `<Uncommitted>`: a staged block.
    Staged(String),
    /// `<Committed>`: a block of the blob as it is now.
    Committed(String),
}

/// Parses `<BlockList><Latest>id</Latest>...</BlockList>`; the reason when the
/// document is not one.
pub fn parse_block_list(body: &[u8]) -> Result<Vec<ListedBlock>, String> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut blocks = Vec::new();
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut open: Option<String> = None;
    let mut text = String::new();
    let mut buffer = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| format!("the block list is not well-formed XML: {e}"))?;
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                depth += 1;
                match (depth, name.as_str()) {
                    (1, "BlockList") if !seen_root => seen_root = true,
                    (1, _) => return Err("the block list's root is not <BlockList>".into()),
                    (2, "Latest" | "Uncommitted" | "Committed") => {
                        open = Some(name);
                        text.clear();
                    }
                    (2, other) => return Err(format!("unknown block list entry <{other}>")),
                    _ => return Err("block list entries hold text only".into()),
                }
            }
            Event::Empty(empty) => {
                let name = String::from_utf8_lossy(empty.local_name().as_ref()).into_owned();
                match (depth, name.as_str()) {
                    (0, "BlockList") if !seen_root => seen_root = true,
                    _ => return Err(format!("empty <{name}> in the block list")),
                }
            }
            Event::Text(t) => {
                let unescaped = t
                    .unescape()
                    .map_err(|e| format!("bad text in the block list: {e}"))?;
                match open {
                    Some(_) => text.push_str(&unescaped),
                    None if unescaped.trim().is_empty() => {}
                    None => return Err("text outside a block list entry".into()),
                }
            }
            Event::CData(_) => return Err("CDATA in the block list".into()),
            Event::End(_) => {
                if depth == 2 {
                    let id = text.trim().to_string();
                    blocks.push(match open.take().as_deref() {
                        Some("Committed") => ListedBlock::Committed(id),
                        _ => ListedBlock::Staged(id),
                    });
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            // Declarations, comments and processing instructions carry nothing.
            _ => {}
        }
        buffer.clear();
    }
    if !seen_root || depth != 0 {
        return Err("the block list is not a complete <BlockList> document".into());
    }
    Ok(blocks)
}

/// Escapes text for an XML element or attribute.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

const DECLARATION: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

/// `<Error><Code>..</Code><Message>..</Message></Error>`.
pub fn error(code: &str, message: &str) -> String {
    format!(
        "{DECLARATION}<Error><Code>{}</Code><Message>{}</Message></Error>",
        escape(code),
        escape(message)
    )
}

/// The Get Block List answer: no committed blocks (blobcache keeps a
/// committed blob whole), the staged ones as `(id, size)`.
pub fn block_list(staged: &[(String, u64)]) -> String {
    let mut out = format!("{DECLARATION}<BlockList><CommittedBlocks />");
    match staged.is_empty() {
        true => out.push_str("<UncommittedBlocks />"),
        false => {
            out.push_str("<UncommittedBlocks>");
            for (id, size) in staged {
                out.push_str(&format!(
                    "<Block><Name>{}</Name><Size>{size}</Size></Block>",
                    escape(id)
                ));
            }
            out.push_str("</UncommittedBlocks>");
        }
    }
    out.push_str("</BlockList>");
    out
}

/// One blob of a List Blobs answer.
pub struct ListedBlob {
    pub name: String,
    pub size: u64,
    pub etag: String,
    /// RFC 1123.
    pub last_modified: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// What a List Blobs answer says besides its blobs.
pub struct Listing<'a> {
    pub service_endpoint: &'a str,
    pub container: &'a str,
    pub prefix: &'a str,
    pub marker: Option<&'a str>,
    pub max_results: u32,
    pub with_metadata: bool,
    pub next_marker: Option<&'a str>,
}

/// The List Blobs answer (`EnumerationResults`).
pub fn list_blobs(listing: &Listing<'_>, blobs: &[ListedBlob]) -> String {
    let mut out = format!(
        "{DECLARATION}<EnumerationResults ServiceEndpoint=\"{}\" ContainerName=\"{}\">",
        escape(listing.service_endpoint),
        escape(listing.container)
    );
    if !listing.prefix.is_empty() {
        out.push_str(&format!("<Prefix>{}</Prefix>", escape(listing.prefix)));
    }
    if let Some(marker) = listing.marker {
        out.push_str(&format!("<Marker>{}</Marker>", escape(marker)));
    }
    out.push_str(&format!("<MaxResults>{}</MaxResults>", listing.max_results));
    out.push_str("<Blobs>");
    for blob in blobs {
        out.push_str(&format!(
            "<Blob><Name>{}</Name><Properties><Creation-Time>{}</Creation-Time>\
             <Last-Modified>{}</Last-Modified><Etag>{}</Etag>\
             <Content-Length>{}</Content-Length><Content-Type>{}</Content-Type>\
             <BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus>\
             <LeaseState>available</LeaseState><ServerEncrypted>false</ServerEncrypted>\
             </Properties>",
            escape(&blob.name),
            blob.last_modified,
            blob.last_modified,
            escape(&blob.etag),
            blob.size,
            escape(
                blob.content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream")
            ),
        ));
        if listing.with_metadata {
            out.push_str("<Metadata>");
            for (name, value) in &blob.metadata {
                out.push_str(&format!("<{name}>{}</{name}>", escape(value)));
            }
            out.push_str("</Metadata>");
        }
        out.push_str("</Blob>");
    }
    out.push_str("</Blobs>");
    match listing.next_marker {
        Some(marker) => out.push_str(&format!("<NextMarker>{}</NextMarker>", escape(marker))),
        None => out.push_str("<NextMarker />"),
    }
    out.push_str("</EnumerationResults>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_parse_in_order() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
            <BlockList><Latest>AAAA</Latest><Uncommitted>QkJC</Uncommitted>
            <Committed>Q0ND</Committed><Latest>a+b/c=</Latest></BlockList>"#;
        assert_eq!(
            parse_block_list(body).unwrap(),
            vec![
                ListedBlock::Staged("AAAA".into()),
                ListedBlock::Staged("QkJC".into()),
                ListedBlock::Committed("Q0ND".into()),
                ListedBlock::Staged("a+b/c=".into()),
            ]
        );
        assert_eq!(parse_block_list(b"<BlockList/>").unwrap(), vec![]);
    }

    #[test]
    fn malformed_block_lists_are_refused() {
        for body in [
            &b""[..],
            b"<BlockList>",
            b"<BlockList><Latest>a</Latest>",
            b"<Blocks><Latest>a</Latest></Blocks>",
            b"<BlockList><Other>a</Other></BlockList>",
            b"<BlockList><Latest><x/></Latest></BlockList>",
            b"<BlockList>text</BlockList>",
            b"<BlockList></BlockList><BlockList></BlockList>",
            b"<BlockList><Latest>a</Wrong></BlockList>",
            b"not xml at all",
        ] {
            assert!(
                parse_block_list(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn answers_escape_what_they_carry() {
        let text = error("BlobNotFound", "no <blob> & none");
        assert!(text.contains("<Code>BlobNotFound</Code>"));
        assert!(text.contains("no &lt;blob&gt; &amp; none"));
        let list = block_list(&[("a+b=".into(), 3)]);
        assert!(list.contains("<Block><Name>a+b=</Name><Size>3</Size></Block>"));
    }
}
