//! Outlook MSG files ([MS-OXMSG]): an OLE compound file whose streams are MAPI properties. The
//! message's text body (plain, else HTML, else the compressed RTF) is the page; sender,
//! recipients, dates, subject and the transport headers are metadata; attachments are children,
//! and an attached message becomes a child `.msg` of its own (re-rooted, so any MSG reader opens it).
//!
//! Every stream is read through a byte limit: a compound file can claim any stream size.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use super::{email, office, text, Child, ExtractError, ExtractErrorKind, Extracted, Page, Source};

/// Most bytes read from one property stream (a body or an attachment).
const STREAM_LIMIT: u64 = 512 << 20;
/// Attached messages inside attached messages, as a MSG nests them (each also a child document,
/// where the tree's depth limit applies again).
const MAX_NESTING: u32 = 8;

// MAPI property tags used here (id, the upper 16 bits of a tag).
const SUBJECT: u16 = 0x0037;
const CLIENT_SUBMIT_TIME: u16 = 0x0039;
const MESSAGE_CLASS: u16 = 0x001A;
const TRANSPORT_HEADERS: u16 = 0x007D;
const SENDER_NAME: u16 = 0x0C1A;
const SENDER_EMAIL: u16 = 0x0C1F;
const SENDER_SMTP: u16 = 0x5D01;
const DISPLAY_BCC: u16 = 0x0E02;
const DISPLAY_CC: u16 = 0x0E03;
const DISPLAY_TO: u16 = 0x0E04;
const DELIVERY_TIME: u16 = 0x0E06;
const BODY: u16 = 0x1000;
const RTF_COMPRESSED: u16 = 0x1009;
const HTML: u16 = 0x1013;
const INTERNET_MESSAGE_ID: u16 = 0x1035;
const CODEPAGE: u16 = 0x3FFD;
const INTERNET_CPID: u16 = 0x3FDE;
const DISPLAY_NAME: u16 = 0x3001;
const EMAIL_ADDRESS: u16 = 0x3003;
const SMTP_ADDRESS: u16 = 0x39FE;
const RECIPIENT_TYPE: u16 = 0x0C15;
const ATTACH_DATA: u16 = 0x3701;
const ATTACH_FILENAME: u16 = 0x3704;
const ATTACH_LONG_FILENAME: u16 = 0x3707;

// Property types.
const PT_LONG: u16 = 0x0003;
const PT_SYSTIME: u16 = 0x0040;
const PT_STRING8: u16 = 0x001E;
const PT_UNICODE: u16 = 0x001F;
const PT_BINARY: u16 = 0x0102;
const PT_OBJECT: u16 = 0x000D;

type Ole = cfb::CompoundFile<Cursor<Vec<u8>>>;

fn corrupt(what: impl std::fmt::Display) -> ExtractError {
    ExtractError::new(ExtractErrorKind::Corrupt, format!("MSG: {what}"))
}

/// Whether an OLE compound file is an Outlook message (its root holds property streams).
pub fn is_msg(ole: &Ole) -> bool {
    ole.exists("/__properties_version1.0") && ole.read_root_storage().any(|e| e.name().starts_with("__substg1.0_"))
}

pub fn extract(mut ole: Ole) -> Result<Extracted, ExtractError> {
    let root = PathBuf::from("/");
    let message = Message::read(&mut ole, &root, 32)?;
    let mut extracted = Extracted { media_type: "application/vnd.ms-outlook".into(), page_count: Some(1), ..Default::default() };
    message.metadata(&mut extracted.metadata);
    extracted.pages.push(Page::text(1, message.body(), Source::Text));
    message.children(&mut ole, &root, 0, &mut extracted.children)?;
    Ok(extracted)
}

/// One message's properties: variable-length ones from their streams, fixed-length ones from the
/// property stream.
struct Message {
    streams: Streams,
    fixed: BTreeMap<u16, (u16, u64)>,
    recipients: Vec<Recipient>,
    codepage: Option<u32>,
}

struct Recipient {
    kind: u32,
    name: Option<String>,
    address: Option<String>,
}

impl Message {
    /// `header` is the size of the property stream's header: 32 for a message file, 24 for an
    /// attached message, 8 for recipients and attachments.
    fn read(ole: &mut Ole, storage: &Path, header: usize) -> Result<Self, ExtractError> {
        let streams = property_streams(ole, storage)?;
        let fixed = fixed_properties(ole, storage, header)?;
        let codepage = [CODEPAGE, INTERNET_CPID].iter().find_map(|id| fixed.get(id).filter(|(t, _)| *t == PT_LONG).map(|(_, v)| *v as u32));
        let mut recipients = Vec::new();
        for path in substorages(ole, storage, "__recip_version1.0_#") {
            let r_streams = property_streams(ole, &path)?;
            let r_fixed = fixed_properties(ole, &path, 8)?;
            let get = |id| text_of(&r_streams, id, codepage);
            recipients.push(Recipient {
                kind: r_fixed.get(&RECIPIENT_TYPE).map_or(1, |(_, v)| *v as u32),
                name: get(DISPLAY_NAME),
                address: get(SMTP_ADDRESS).or_else(|| get(EMAIL_ADDRESS)),
            });
        }
        Ok(Self { streams, fixed, recipients, codepage })
    }

    fn string(&self, id: u16) -> Option<String> {
        text_of(&self.streams, id, self.codepage)
    }

    fn time(&self, id: u16) -> Option<String> {
        let (kind, filetime) = self.fixed.get(&id)?;
        (*kind == PT_SYSTIME).then(|| super::legacy::filetime(*filetime)).flatten()
    }

    fn metadata(&self, meta: &mut BTreeMap<String, String>) {
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                meta.insert(key.to_owned(), v);
            }
        };
        let sender_address = self.string(SENDER_SMTP).or_else(|| self.string(SENDER_EMAIL).filter(|a| a.contains('@')));
        put(
            "from",
            match (self.string(SENDER_NAME), sender_address) {
                (Some(name), Some(addr)) if name != addr => Some(format!("{name} <{addr}>")),
                (name, addr) => addr.or(name),
            },
        );
        for (kind, key, display) in [(1, "to", DISPLAY_TO), (2, "cc", DISPLAY_CC), (3, "bcc", DISPLAY_BCC)] {
            let listed: Vec<String> = self
                .recipients
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| match (&r.name, &r.address) {
                    (Some(n), Some(a)) if n != a => format!("{n} <{a}>"),
                    (n, a) => a.clone().or_else(|| n.clone()).unwrap_or_default(),
                })
                .filter(|s| !s.is_empty())
                .collect();
            put(key, if listed.is_empty() { self.string(display) } else { Some(listed.join(", ")) });
        }
        put("subject", self.string(SUBJECT));
        put("date", self.time(CLIENT_SUBMIT_TIME));
        put("delivered", self.time(DELIVERY_TIME));
        put("message_class", self.string(MESSAGE_CLASS));
        put("message_id", self.string(INTERNET_MESSAGE_ID));
        if let Some(headers) = self.string(TRANSPORT_HEADERS) {
            email::transport_metadata(headers.as_bytes(), meta);
        }
    }

    /// The plain body; else the HTML body as text; else the RTF body as text.
    fn body(&self) -> String {
        if let Some(body) = self.string(BODY) {
            return body.replace("\r\n", "\n").trim_end().to_owned();
        }
        if let Some(html) = self.streams.get(&HTML) {
            let html = if html.kind == PT_UNICODE { decode(html, None).into_bytes() } else { html.bytes.clone() };
            if let Ok(extracted) = text::html(&html) {
                return extracted.pages.into_iter().map(|p| p.text).collect::<Vec<_>>().join("\n");
            }
        }
        if let Some(rtf) = self.streams.get(&RTF_COMPRESSED).and_then(|c| decompress_rtf(&c.bytes).ok()) {
            return office::rtf(&rtf).pages.into_iter().map(|p| p.text).collect::<Vec<_>>().join("\n");
        }
        String::new()
    }

    /// Attachments as children: file data as it is, attached messages as `.msg` files.
    fn children(&self, ole: &mut Ole, storage: &Path, nesting: u32, out: &mut Vec<Child>) -> Result<(), ExtractError> {
        for (i, path) in substorages(ole, storage, "__attach_version1.0_#").into_iter().enumerate() {
            let streams = property_streams(ole, &path)?;
            let get = |id| text_of(&streams, id, self.codepage);
            let name = get(ATTACH_LONG_FILENAME).or_else(|| get(ATTACH_FILENAME)).or_else(|| get(DISPLAY_NAME));
            if let Some(data) = streams.get(&ATTACH_DATA).filter(|p| p.kind == PT_BINARY) {
                out.push(Child { path: safe_name(name, i), bytes: data.bytes.clone().into() });
                continue;
            }
            let embedded = path.join(format!("__substg1.0_{ATTACH_DATA:04X}{PT_OBJECT:04X}"));
            if ole.is_storage(&embedded) && nesting < MAX_NESTING {
                let inner = Message::read(ole, &embedded, 24)?;
                let subject = inner.string(SUBJECT);
                let file = rerooted(ole, &embedded)?;
                let stem = name.or(subject).unwrap_or_else(|| format!("attached-message-{}", i + 1));
                out.push(Child { path: safe_name(Some(format!("{}.msg", stem.trim_end_matches(".msg"))), i), bytes: file.into() });
            }
        }
        Ok(())
    }
}

/// Storages directly under `storage` whose names start with `prefix`, in name order.
fn substorages(ole: &Ole, storage: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = ole.read_storage(storage) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.filter(|e| e.is_storage() && e.name().starts_with(prefix)).map(|e| e.path().to_owned()).collect();
    paths.sort();
    paths
}

/// A variable-length property: its type (PT_UNICODE, PT_STRING8, PT_BINARY) and its stream.
struct Property {
    kind: u16,
    bytes: Vec<u8>,
}

type Streams = BTreeMap<u16, Property>;

/// A property's text, if it has any besides white space.
fn text_of(streams: &Streams, id: u16, codepage: Option<u32>) -> Option<String> {
    let value = decode(streams.get(&id)?, codepage);
    (!value.trim().is_empty()).then_some(value)
}

/// The `__substg1.0_IIIITTTT` streams of one storage that hold strings or binary data.
fn property_streams(ole: &mut Ole, storage: &Path) -> Result<Streams, ExtractError> {
    let entries: Vec<(String, PathBuf)> = match ole.read_storage(storage) {
        Ok(entries) => entries.filter(|e| e.is_stream()).map(|e| (e.name().to_owned(), e.path().to_owned())).collect(),
        Err(e) => return Err(corrupt(e)),
    };
    let mut streams = BTreeMap::new();
    for (name, path) in entries {
        let Some(tag) = name.strip_prefix("__substg1.0_").filter(|t| t.len() == 8) else { continue };
        let (Ok(id), Ok(kind)) = (u16::from_str_radix(&tag[..4], 16), u16::from_str_radix(&tag[4..], 16)) else { continue };
        if !matches!(kind, PT_UNICODE | PT_STRING8 | PT_BINARY) {
            continue;
        }
        streams.insert(id, Property { kind, bytes: read_stream(ole, &path)? });
    }
    Ok(streams)
}

fn read_stream(ole: &mut Ole, path: &Path) -> Result<Vec<u8>, ExtractError> {
    let stream = ole.open_stream(path).map_err(corrupt)?;
    let mut data = Vec::new();
    stream.take(STREAM_LIMIT + 1).read_to_end(&mut data).map_err(corrupt)?;
    if data.len() as u64 > STREAM_LIMIT {
        return Err(ExtractError::new(ExtractErrorKind::TooLarge, format!("MSG: a property stream is over {STREAM_LIMIT} bytes")));
    }
    Ok(data)
}

/// Fixed-length properties (times, numbers): 16-byte entries after the stream's header.
fn fixed_properties(ole: &mut Ole, storage: &Path, header: usize) -> Result<BTreeMap<u16, (u16, u64)>, ExtractError> {
    let path = storage.join("__properties_version1.0");
    let mut fixed = BTreeMap::new();
    if !ole.is_stream(&path) {
        return Ok(fixed);
    }
    let data = read_stream(ole, &path)?;
    for entry in data.get(header..).unwrap_or_default().chunks_exact(16) {
        let kind = u16::from_le_bytes([entry[0], entry[1]]);
        let id = u16::from_le_bytes([entry[2], entry[3]]);
        let value = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
        fixed.insert(id, (kind, value));
    }
    Ok(fixed)
}

/// A string property's text: UTF-16LE, or 8-bit in the message's code page (Windows-1252 when it
/// names none), or binary data as the body's HTML carries it.
fn decode(property: &Property, codepage: Option<u32>) -> String {
    let text = match property.kind {
        PT_UNICODE => encoding_rs::UTF_16LE.decode_without_bom_handling(&property.bytes).0,
        _ => codepage.and_then(text::encoding_for_codepage).unwrap_or(encoding_rs::WINDOWS_1252).decode(&property.bytes).0,
    };
    text.trim_end_matches('\0').to_owned()
}

/// A member name that is only a name: no directories, no traversal, no control characters.
fn safe_name(name: Option<String>, index: usize) -> String {
    let name = name.unwrap_or_default();
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        format!("attachment-{}", index + 1)
    } else {
        clean
    }
}

/// The attached message at `storage` as a MSG file of its own: its streams and storages copied
/// into a new compound file, with the property stream's header widened from an attached
/// message's 24 bytes to a message file's 32.
fn rerooted(ole: &mut Ole, storage: &Path) -> Result<Vec<u8>, ExtractError> {
    let mut out = cfb::CompoundFile::create(Cursor::new(Vec::new())).map_err(corrupt)?;
    let entries: Vec<(PathBuf, bool)> = ole.walk_storage(storage).map_err(corrupt)?.map(|e| (e.path().to_owned(), e.is_storage())).collect();
    let mut copied = 0u64;
    for (path, is_storage) in entries {
        let Ok(relative) = path.strip_prefix(storage) else { continue };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = Path::new("/").join(relative);
        if is_storage {
            out.create_storage_all(&target).map_err(corrupt)?;
            continue;
        }
        let mut data = read_stream(ole, &path)?;
        copied += data.len() as u64;
        if copied > STREAM_LIMIT {
            return Err(ExtractError::new(ExtractErrorKind::TooLarge, format!("MSG: attached message over {STREAM_LIMIT} bytes")));
        }
        if relative == Path::new("__properties_version1.0") && data.len() >= 24 {
            data.splice(24..24, [0u8; 8]);
        }
        out.create_stream(&target).and_then(|mut s| s.write_all(&data)).map_err(corrupt)?;
    }
    out.flush().map_err(corrupt)?;
    Ok(out.into_inner().into_inner())
}

/// The dictionary every compressed RTF body starts from ([MS-OXRTFCP] 3.1.1.1.1).
const RTF_PREBUF: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";

/// Decompress an RTF body ([MS-OXRTFCP]): LZ77 over a 4 KiB ring dictionary. The output is
/// capped at the size the header states and at the stream limit.
pub fn decompress_rtf(data: &[u8]) -> Result<Vec<u8>, ExtractError> {
    if data.len() < 16 {
        return Err(corrupt("RTF body is shorter than its header"));
    }
    let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    let raw_size = (word(4) as u64).min(STREAM_LIMIT) as usize;
    match word(8) {
        0x414C_454D => return Ok(data[16..].iter().copied().take(raw_size).collect()), // "MELA": stored
        0x7546_5A4C => {}                                                                  // "LZFu"
        other => return Err(corrupt(format!("unknown RTF compression {other:#x}"))),
    }
    let mut dict = [0u8; 4096];
    dict[..RTF_PREBUF.len()].copy_from_slice(RTF_PREBUF);
    let mut write = RTF_PREBUF.len();
    let mut out = Vec::with_capacity(raw_size.min(1 << 20));
    let mut input = data[16..].iter().copied();
    'outer: while let Some(control) = input.next() {
        for bit in 0..8 {
            if control & (1 << bit) == 0 {
                let Some(byte) = input.next() else { break 'outer };
                out.push(byte);
                dict[write] = byte;
                write = (write + 1) % 4096;
            } else {
                let (Some(hi), Some(lo)) = (input.next(), input.next()) else { break 'outer };
                let reference = u16::from_be_bytes([hi, lo]);
                let offset = (reference >> 4) as usize;
                if offset == write {
                    break 'outer; // the end marker
                }
                for k in 0..(reference & 0xF) as usize + 2 {
                    let byte = dict[(offset + k) % 4096];
                    out.push(byte);
                    dict[write] = byte;
                    write = (write + 1) % 4096;
                }
            }
            if out.len() >= raw_size {
                break 'outer;
            }
        }
    }
    out.truncate(raw_size);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtf_dictionary_is_the_specified_one() {
        assert_eq!(RTF_PREBUF.len(), 207);
    }

    #[test]
    fn filetime_converts_and_refuses_nonsense() {
        // 2007-10-01T16:13:56Z
        assert_eq!(crate::extract::legacy::filetime(128_357_288_360_000_000).as_deref(), Some("2007-10-01T16:13:56Z"));
        assert_eq!(crate::extract::legacy::filetime(0), None);
        assert_eq!(crate::extract::legacy::filetime(u64::MAX), None);
    }

    #[test]
    fn names_cannot_traverse() {
        assert_eq!(safe_name(Some("../../etc/passwd".into()), 0), "passwd");
        assert_eq!(safe_name(Some("C:\\x\\..".into()), 2), "attachment-3");
        assert_eq!(safe_name(None, 0), "attachment-1");
    }

    #[test]
    fn a_real_compressed_rtf_body_decompresses_to_the_message() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/docs/testMSG.msg");
        let mut ole = cfb::CompoundFile::open(Cursor::new(std::fs::read(path).unwrap())).unwrap();
        let compressed = read_stream(&mut ole, Path::new("/__substg1.0_10090102")).unwrap();
        let rtf = decompress_rtf(&compressed).unwrap();
        assert!(rtf.starts_with(b"{\\rtf1"), "{:?}", String::from_utf8_lossy(&rtf[..40.min(rtf.len())]));
        let text = office::rtf(&rtf).pages.into_iter().map(|p| p.text).collect::<String>();
        assert!(text.contains("type detection code"), "{text}");
    }

    #[test]
    fn hostile_rtf_headers_stay_bounded() {
        let mut data = vec![0u8; 16];
        data[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        data[8..12].copy_from_slice(&0x7546_5A4Cu32.to_le_bytes());
        data.extend(std::iter::repeat_n(0xFFu8, 64)); // references only, no end marker
        let out = decompress_rtf(&data).unwrap();
        assert!(out.len() <= 64 * 17);
        data[8..12].copy_from_slice(b"XXXX");
        assert!(decompress_rtf(&data).is_err());
    }
}
