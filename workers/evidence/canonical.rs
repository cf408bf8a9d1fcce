//! RFC 8785 JSON Canonicalization Scheme (JCS): the one byte string a JSON value has, whatever
//! the order of its members or the spelling of its numbers. Signatures and hashes are taken over
//! it, so a result that passed through a database (which reorders keys and respells numbers)
//! still verifies, and any JCS implementation (Python's `rfc8785`, Java, JavaScript) can check
//! docpipe's signatures without docpipe.

use serde_json::Value;

/// The canonical bytes of `value`.
///
/// Parse the JSON text to get `value` (`serde_json::from_slice`), do not build it with
/// `serde_json::to_value` from Rust structs: that widens `f32` fields to their `f64` expansion
/// (0.93 becomes 0.9300000071525574), while the text, and every verifier reading it, has 0.93.
pub fn canonical(value: &Value) -> Vec<u8> {
    canonical_without(value, None)
}

/// The canonical bytes of `value` with its top-level member `left_out` left out (a signature
/// over the rest), without copying the value.
pub fn canonical_without(value: &Value, left_out: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_object_or_value(value, left_out, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    write_object_or_value(value, None, out)
}

fn write_object_or_value(value: &Value, left_out: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let kept = members.iter().filter(|(name, _)| Some(name.as_str()) != left_out);
            let (names, values): (Vec<&str>, Vec<&Value>) = kept.map(|(name, value)| (name.as_str(), value)).unzip();
            out.push(b'{');
            for (n, i) in order(&names).into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_string(names[i], out);
                out.push(b':');
                write(values[i], out);
            }
            out.push(b'}');
        }
    }
}

/// Write an object whose members' values are already canonical bytes.
pub(super) fn write_members_sorted<'a>(members: impl Iterator<Item = (&'a str, &'a [u8])>, out: &mut Vec<u8>) {
    let members: Vec<(&str, &[u8])> = members.collect();
    let names: Vec<&str> = members.iter().map(|m| m.0).collect();
    out.push(b'{');
    for (n, i) in order(&names).into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_string(members[i].0, out);
        out.push(b':');
        out.extend_from_slice(members[i].1);
    }
    out.push(b'}');
}

/// The order members are written in: by their names' UTF-16 code units (RFC 8785 section
/// 3.2.3). That is UTF-8 byte order unless a name holds characters from U+E000 up, and names
/// usually come in byte order already (serde_json's map, sorted struct fields): sort only if not.
fn order(names: &[&str]) -> Vec<usize> {
    let in_order = names.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes())
        && !names.iter().any(|k| k.chars().any(|c| c >= '\u{e000}'));
    let mut order: Vec<usize> = (0..names.len()).collect();
    if !in_order {
        order.sort_by(|&a, &b| names[a].encode_utf16().cmp(names[b].encode_utf16()));
    }
    order
}

/// Numbers are IEEE doubles written as ECMAScript's Number.prototype.toString writes them.
fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    // Without serde_json's arbitrary_precision every number has an f64 value.
    write_f64(n.as_f64().expect("a JSON number is a double"), out);
}

pub(super) fn write_f64(x: f64, out: &mut Vec<u8>) {
    if x == 0.0 {
        // Both zeros are "0".
        out.push(b'0');
        return;
    }
    out.extend_from_slice(ryu_js::Buffer::new().format_finite(x).as_bytes());
}

pub(super) fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Copy runs that need no escape whole; only `"`, `\` and controls below U+0020 are escaped.
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if escaped.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escaped);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Parse JSON text as RFC 8785 requires (I-JSON): an object naming a member twice is refused.
/// serde_json keeps the last of two; a reader that keeps the first would see other content
/// under the same signature.
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(serde::de::Error::custom("an object names a member twice (not I-JSON, RFC 7493)"));
            }
            let value = map.next_value_seed(Strict)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jcs(text: &str) -> String {
        String::from_utf8(canonical(&serde_json::from_str(text).unwrap())).unwrap()
    }

    #[test]
    fn rfc_8785_example() {
        // Section 3.2.2 of the RFC: input and its canonical form.
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        assert_eq!(
            jcs(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn members_sort_by_utf16_code_units() {
        // RFC 8785 section 3.2.3's sorting example: U+10000 (a surrogate pair, D800 DC00) sorts
        // before U+FB33 in UTF-16 although it is after it in UTF-8.
        let input = "{\"\u{20ac}\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\"}";
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(jcs(input), expected);
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Values from RFC 8785 appendix B.
        for (input, expected) in [
            ("0", "0"),
            ("-0", "0"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("9007199254740992", "9007199254740992"),
            ("295147905179352830000", "295147905179352830000"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("4.35", "4.35"),
            ("-5e-324", "-5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ] {
            assert_eq!(jcs(input), expected, "{input}");
        }
    }

    #[test]
    fn strict_parse_refuses_a_member_named_twice() {
        assert!(parse_strict(r#"{"a":1,"b":{"c":"x","c":"y"}}"#).is_err());
        assert_eq!(parse_strict(r#"{"a":[1,2.5,"x"],"b":null}"#).unwrap(), serde_json::json!({"a":[1,2.5,"x"],"b":null}));
        assert!(parse_strict(r#"{"a":1} trailing"#).is_err());
    }

    #[test]
    fn same_value_same_bytes_whatever_the_spelling() {
        let a = jcs(r#"{"b": 1.0, "a": [0.5, "x\u0041"]}"#);
        let b = jcs("{\"a\":[5e-1,\"xA\"],\"b\":1}");
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":[0.5,"xA"],"b":1}"#);
    }
}
