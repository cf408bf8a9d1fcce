//! Metadata investigators look for in photographs (EXIF: camera, times, GPS position), and
//! calendars (iCalendar) and address books (vCard) read as text with named fields.

use std::collections::BTreeMap;

use super::{text, ExtractError, ExtractErrorKind, Extracted, Page, Source};

/// EXIF fields of an image (JPEG, TIFF, PNG, WebP), as metadata. No EXIF block: nothing.
pub fn exif(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    let Ok(exif) = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(bytes)) else { return meta };
    let wanted = [
        (exif::Tag::Make, "camera_make"),
        (exif::Tag::Model, "camera_model"),
        (exif::Tag::BodySerialNumber, "camera_serial"),
        (exif::Tag::LensModel, "lens_model"),
        (exif::Tag::Software, "software"),
        (exif::Tag::Artist, "artist"),
        (exif::Tag::Copyright, "copyright"),
        (exif::Tag::DateTimeOriginal, "taken"),
        (exif::Tag::DateTimeDigitized, "digitized"),
        (exif::Tag::DateTime, "modified"),
        (exif::Tag::OffsetTimeOriginal, "taken_utc_offset"),
        (exif::Tag::ImageUniqueID, "image_unique_id"),
        (exif::Tag::GPSDateStamp, "gps_date"),
    ];
    for (tag, key) in wanted {
        if let Some(field) = exif.get_field(tag, exif::In::PRIMARY) {
            let value = field.display_value().to_string().trim_matches('"').trim().to_owned();
            if !value.is_empty() {
                meta.insert(key.to_owned(), value);
            }
        }
    }
    let coordinate = |value: exif::Tag, reference: exif::Tag, negative: &str| -> Option<f64> {
        let exif::Value::Rational(parts) = &exif.get_field(value, exif::In::PRIMARY)?.value else { return None };
        let degrees = parts.iter().take(3).zip([1.0, 60.0, 3600.0]).map(|(r, d)| r.to_f64() / d).sum::<f64>();
        let sign = match exif.get_field(reference, exif::In::PRIMARY) {
            Some(r) if r.display_value().to_string().trim_matches('"').eq_ignore_ascii_case(negative) => -1.0,
            _ => 1.0,
        };
        degrees.is_finite().then_some(sign * degrees)
    };
    let latitude = coordinate(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, "S").filter(|v| v.abs() <= 90.0);
    let longitude = coordinate(exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef, "W").filter(|v| v.abs() <= 180.0);
    if let (Some(lat), Some(lon)) = (latitude, longitude) {
        meta.insert("gps_latitude".into(), format!("{lat:.6}"));
        meta.insert("gps_longitude".into(), format!("{lon:.6}"));
    }
    if let Some(exif::Value::Rational(alt)) = exif.get_field(exif::Tag::GPSAltitude, exif::In::PRIMARY).map(|f| &f.value) {
        if let Some(metres) = alt.first().map(|r| r.to_f64()).filter(|m| m.is_finite()) {
            meta.insert("gps_altitude_m".into(), format!("{metres:.1}"));
        }
    }
    meta
}

/// iCalendar events and vCard contacts as text: one block per item, a line per field, in the
/// order the fields are named below, so the summary and translation read them like a document.
pub fn fields(bytes: &[u8], media: &str) -> Result<Extracted, ExtractError> {
    let (source, encoding) = text::decode(bytes, None);
    let (item, names): (&str, &[(&str, &str)]) = if media == "text/calendar" {
        ("VEVENT", &[("SUMMARY", "Event"), ("DTSTART", "Starts"), ("DTEND", "Ends"), ("LOCATION", "Location"), ("ORGANIZER", "Organizer"), ("ATTENDEE", "Attendee"), ("DESCRIPTION", "Description"), ("UID", "UID")])
    } else {
        ("VCARD", &[("FN", "Name"), ("N", "Structured name"), ("ORG", "Organization"), ("TITLE", "Title"), ("TEL", "Phone"), ("EMAIL", "Email"), ("ADR", "Address"), ("BDAY", "Birthday"), ("URL", "URL"), ("NOTE", "Note")])
    };
    // Lines that start with a space or tab continue the previous one (RFC 5545 3.1, RFC 6350 3.2).
    let mut lines: Vec<String> = Vec::new();
    for line in source.lines() {
        match line.strip_prefix([' ', '\t']) {
            Some(rest) if !lines.is_empty() => lines.last_mut().expect("a previous line").push_str(rest),
            _ => lines.push(line.to_owned()),
        }
    }
    let mut blocks = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in &lines {
        let Some((head, value)) = line.split_once(':') else { continue };
        let name = head.split(';').next().unwrap_or("").to_ascii_uppercase();
        match (name.as_str(), value.trim().to_ascii_uppercase()) {
            ("BEGIN", v) if v == item => current = Some(Vec::new()),
            ("END", v) if v == item => blocks.extend(current.take()),
            _ => {
                if let Some(fields) = current.as_mut() {
                    fields.push((name, unescape(value)));
                }
            }
        }
    }
    if blocks.is_empty() {
        return Err(ExtractError::new(ExtractErrorKind::Empty, format!("no {item} in the file")));
    }
    let text: Vec<String> = blocks
        .iter()
        .map(|fields| {
            names
                .iter()
                .flat_map(|(name, label)| fields.iter().filter(move |(n, _)| n == name).map(move |(_, v)| format!("{label}: {v}")))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let mut extracted = Extracted {
        media_type: media.into(),
        encoding: Some(encoding),
        page_count: Some(1),
        pages: vec![Page::text(1, text.join("\n\n"), Source::Text)],
        ..Default::default()
    };
    extracted.metadata.insert(if media == "text/calendar" { "events" } else { "contacts" }.into(), blocks.len().to_string());
    Ok(extracted)
}

/// Undo iCalendar/vCard text escapes (`\n`, `\,`, `\;`, `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_events_and_cards_become_fields() {
        let ics = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Meet at the\r\n  harbour\\, pier 4\r\nDTSTART:20260101T100000Z\r\nLOCATION:Rotterdam\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let out = fields(ics, "text/calendar").unwrap();
        assert_eq!(out.pages[0].text, "Event: Meet at the harbour, pier 4\nStarts: 20260101T100000Z\nLocation: Rotterdam");
        assert_eq!(out.metadata["events"], "1");
        let vcf = "BEGIN:VCARD\nVERSION:3.0\nFN:Иван Петров\nTEL;TYPE=cell:+7 900 000 00 00\nEND:VCARD\n";
        let out = fields(vcf.as_bytes(), "text/vcard").unwrap();
        assert_eq!(out.pages[0].text, "Name: Иван Петров\nPhone: +7 900 000 00 00");
        assert_eq!(fields(b"BEGIN:VCARD\n", "text/vcard").unwrap_err().kind, ExtractErrorKind::Empty);
    }
}
