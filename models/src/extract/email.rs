//! Email (RFC 822 / MIME) and mailboxes. Headers become metadata, bodies the text, attachments
//! child documents. PGP-encrypted mail keeps its armoured body and is reported `encrypted`.

use std::io::{BufRead, Read, Write};

use mail_parser::{Address, MessageParser, MimeHeaders};

use super::archive::Budget;
use super::input::Input;
use super::spill::{ChildBytes, Spill};
use super::{Child, ExtractError, ExtractErrorKind, Extracted, Limits, Page, Request, Source};

fn addresses(address: Option<&Address<'_>>) -> Option<String> {
    let list: Vec<String> = address?
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (None, Some(addr)) => addr.to_owned(),
            (Some(name), None) => name.to_owned(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

pub fn eml(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let message = MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| ExtractError::new(ExtractErrorKind::Corrupt, "not a readable email message"))?;
    let mut extracted = Extracted { media_type: "message/rfc822".into(), page_count: Some(1), ..Default::default() };
    let meta = &mut extracted.metadata;
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            meta.insert(key.to_owned(), v);
        }
    };
    put("from", addresses(message.from()));
    put("to", addresses(message.to()));
    put("cc", addresses(message.cc()));
    put("reply_to", addresses(message.reply_to()));
    put("subject", message.subject().map(str::to_owned));
    put("date", message.date().map(|d| d.to_rfc3339()));
    put("message_id", message.message_id().map(str::to_owned));
    put("in_reply_to", message.in_reply_to().as_text().map(str::to_owned));
    route_metadata(&message, meta);

    let mut body = String::new();
    for i in 0..message.text_body_count() {
        if let Some(text) = message.body_text(i) {
            if !body.is_empty() {
                body.push_str("\n\n");
            }
            body.push_str(text.trim_end());
        }
    }
    let encrypted = message.content_type().is_some_and(|ct| ct.c_type.eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("encrypted")))
        || body.contains("-----BEGIN PGP MESSAGE-----");

    for (i, part) in message.attachments().enumerate() {
        let name = part.attachment_name().map(str::to_owned).unwrap_or_else(|| match part.message() {
            Some(inner) => format!("{}.eml", inner.subject().unwrap_or("attached-message")),
            None => format!("attachment-{}", i + 1),
        });
        let data = match part.message() {
            Some(inner) => inner.raw_message().to_vec(),
            None => part.contents().to_vec(),
        };
        if encrypted && (data.starts_with(b"-----BEGIN PGP MESSAGE-----") || name.ends_with(".asc")) && body.is_empty() {
            body = String::from_utf8_lossy(&data).into_owned();
            continue;
        }
        if encrypted && data.starts_with(b"Version: 1") {
            continue; // the PGP/MIME control part
        }
        extracted.children.push(Child { path: name, bytes: data.into() });
    }
    extracted.pages.push(Page::text(1, body, Source::Text));
    if encrypted {
        extracted.condition = Some(ExtractError::new(ExtractErrorKind::Encrypted, "PGP-encrypted message: headers read, body kept as received"));
    }
    Ok(extracted)
}

/// The route a message took, as investigators trace it: every `Received` hop (newest first, as
/// the headers list them), the return path and the originating IP a webmail server recorded.
fn route_metadata(message: &mail_parser::Message<'_>, meta: &mut std::collections::BTreeMap<String, String>) {
    let unfolded = |value: &str| value.split_whitespace().collect::<Vec<_>>().join(" ");
    let hops: Vec<String> = message.headers_raw().filter(|(name, _)| name.eq_ignore_ascii_case("received")).map(|(_, v)| unfolded(v)).collect();
    if !hops.is_empty() {
        meta.insert("received".into(), hops.join("\n"));
        meta.insert("received_hops".into(), hops.len().to_string());
    }
    for (header, key) in [("return-path", "return_path"), ("x-originating-ip", "x_originating_ip")] {
        if let Some((_, value)) = message.headers_raw().find(|(name, _)| name.eq_ignore_ascii_case(header)) {
            meta.insert(key.into(), unfolded(value));
        }
    }
}

/// Metadata from a block of internet headers kept beside a message (an Outlook message's
/// transport headers): message id, date and the route, where the message itself lacks them.
pub fn transport_metadata(headers: &[u8], meta: &mut std::collections::BTreeMap<String, String>) {
    let mut block = headers.to_vec();
    block.extend_from_slice(b"\r\n\r\n");
    let Some(message) = MessageParser::default().parse(&block[..]) else { return };
    if let Some(id) = message.message_id() {
        meta.entry("message_id".into()).or_insert_with(|| id.to_owned());
    }
    if let Some(date) = message.date() {
        meta.entry("date".into()).or_insert_with(|| date.to_rfc3339());
    }
    route_metadata(&message, meta);
}

/// Longest piece of a mailbox line read at once: a line with no end in sight is read in pieces,
/// so a hostile mailbox cannot make one line the size of the file.
const LINE_PIECE: u64 = 64 * 1024;

/// An mbox file, read as it streams: each message goes to a child as it is read (spilled to a
/// file past a megabyte), so a mailbox of gigabytes never sits in memory. The "From " envelope
/// lines separate messages and are not part of them; a quoted ">From " line loses one '>'
/// (mboxrd), as mail readers restore it. A single message is read as the email it is, when it
/// fits in `in_memory` bytes. Each message is taken from the document tree's budget as it ends:
/// reading stops where the budget does (`too_large`), keeping the messages read.
pub fn mbox(input: Input<'_>, in_memory: u64, limits: &Limits, request: &Request, budget: &mut Budget) -> Result<Extracted, ExtractError> {
    let unreadable = |e: std::io::Error| ExtractError::new(ExtractErrorKind::Corrupt, format!("mailbox: {e}"));
    let mut reader = std::io::BufReader::new(input.open()?);
    let mut messages = Vec::new();
    let mut current: Option<Spill> = None;
    let mut line = Vec::with_capacity(256);
    // Whether the piece read next starts a line, and whether the line being read is an envelope.
    let (mut line_start, mut envelope) = (true, false);
    let mut limit_hit = None;
    let mut take = |done: Spill, messages: &mut Vec<ChildBytes>| -> Result<bool, ExtractError> {
        if let Err(stop) = budget.take(done.len(), limits) {
            limit_hit = Some(stop);
            return Ok(false);
        }
        messages.push(done.finish().map_err(unreadable)?);
        Ok(true)
    };
    let mut lines = 0u64;
    loop {
        lines += 1;
        if lines % 4096 == 0 {
            request.check_cancelled()?;
        }
        line.clear();
        if (&mut reader).take(LINE_PIECE).read_until(b'\n', &mut line).map_err(unreadable)? == 0 {
            break;
        }
        let starts_line = std::mem::replace(&mut line_start, line.ends_with(b"\n"));
        if starts_line {
            envelope = line.starts_with(b"From ");
            if envelope {
                if let Some(done) = current.replace(Spill::default()) {
                    if !take(done, &mut messages)? {
                        current = None;
                        break;
                    }
                }
            }
        }
        let Some(message) = current.as_mut().filter(|_| !envelope) else { continue };
        let quoted_from = starts_line && line.first() == Some(&b'>') && line.iter().skip_while(|&&b| b == b'>').take(5).eq(b"From ");
        message.write_all(if quoted_from { &line[1..] } else { &line[..] }).map_err(unreadable)?;
    }
    if let Some(done) = current {
        take(done, &mut messages)?;
    }
    match messages.len() {
        0 => return Err(limit_hit.unwrap_or_else(|| ExtractError::new(ExtractErrorKind::Corrupt, "mailbox holds no message"))),
        // A single message with an mbox "From " envelope line: read it as the email it is.
        1 if messages[0].len() <= in_memory && limit_hit.is_none() => return eml(&messages[0].read().map_err(unreadable)?),
        _ => {}
    }
    let mut extracted = Extracted { media_type: "application/mbox".into(), ..Default::default() };
    for (i, message) in messages.into_iter().enumerate() {
        extracted.children.push(Child { path: format!("message-{:05}.eml", i + 1), bytes: message });
    }
    extracted.metadata.insert("messages".into(), extracted.children.len().to_string());
    extracted.condition = limit_hit;
    Ok(extracted)
}
