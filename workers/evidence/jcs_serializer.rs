//! RFC 8785 canonical JSON written straight from Rust values, without going through JSON text.
//! The bytes are those `canonical(parse(serde_json::to_vec(value)))` gives (a test holds them
//! to it); skipping the text round trip is what keeps signing every result cheap.

use std::borrow::Cow;

use serde::ser::{self, Serialize};

use super::canonical::{write_f64, write_members_sorted, write_string};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The canonical bytes of `value`, as a verifier computes them from its JSON text.
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(4096);
    value.serialize(Writer { out: &mut out })?;
    Ok(out)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// Integers become doubles in JCS; below 2^53 that is the integer itself.
fn write_u64(v: u64, out: &mut Vec<u8>) {
    if v < (1 << 53) {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    } else {
        write_f64(v as f64, out);
    }
}

fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v.unsigned_abs() < (1 << 53) {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    } else {
        write_f64(v as f64, out);
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        write_i64(v, self.out);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        write_u64(v, self.out);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        if !v.is_finite() {
            return self.serialize_unit(); // serde_json writes null
        }
        // The text has the f32's shortest form; a reader parses that into the nearest double.
        let mut text = ryu::Buffer::new();
        write_f64(text.format_finite(v).parse().map_err(|_| Error("unparsable float".into()))?, self.out);
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        write_f64(v, self.out);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_string(v.encode_utf8(&mut [0u8; 4]), self.out);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_string(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // serde_json writes bytes as an array of numbers.
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, variant: &'static str, value: &T) -> Result<(), Error> {
        let mut object = Object::new(self.out, None);
        ser::SerializeStruct::serialize_field(&mut object, variant, value)?;
        ser::SerializeStruct::end(object)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push(b'[');
        Ok(Seq { out: self.out, first: true, variant: false })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Seq<'a>, Error> {
        // {"variant":[...]}: the one-member object needs no sorting.
        self.out.push(b'{');
        write_string(variant, self.out);
        self.out.extend_from_slice(b":[");
        Ok(Seq { out: self.out, first: true, variant: true })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object::new(self.out, None))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'a>, Error> {
        Ok(Object::new(self.out, None))
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Object<'a>, Error> {
        Ok(Object::new(self.out, Some(variant)))
    }
}

pub struct Seq<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    variant: bool,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Writer { out: self.out })
    }
    fn close(self) -> Result<(), Error> {
        self.out.push(b']');
        if self.variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

/// The four sequence traits differ only in the name of their element method.
macro_rules! sequence {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )*};
}

sequence!(SerializeSeq::serialize_element, SerializeTuple::serialize_element, SerializeTupleStruct::serialize_field, SerializeTupleVariant::serialize_field);

/// An object's members, each written to `buffer` as it comes; sorted by name at the end.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    /// A struct variant is `{"variant":{...}}`.
    variant: Option<&'static str>,
    buffer: Vec<u8>,
    /// Struct fields' names are static; a map's keys are not.
    members: Vec<(Cow<'static, str>, std::ops::Range<usize>)>,
    /// A map's key, between serialize_key and serialize_value.
    key: Option<String>,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>, variant: Option<&'static str>) -> Self {
        Self { out, variant, buffer: Vec::with_capacity(128), members: Vec::with_capacity(8), key: None }
    }

    fn member<T: Serialize + ?Sized>(&mut self, name: Cow<'static, str>, value: &T) -> Result<(), Error> {
        let start = self.buffer.len();
        value.serialize(Writer { out: &mut self.buffer })?;
        self.members.push((name, start..self.buffer.len()));
        Ok(())
    }

    fn close(self) -> Result<(), Error> {
        if let Some(variant) = self.variant {
            self.out.push(b'{');
            write_string(variant, self.out);
            self.out.push(b':');
        }
        let buffer = &self.buffer;
        write_members_sorted(self.members.iter().map(|(name, range)| (name.as_ref(), &buffer[range.clone()])), self.out);
        if self.variant.is_some() {
            self.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<(), Error> {
        self.member(Cow::Borrowed(name), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<(), Error> {
        self.member(Cow::Borrowed(name), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(KeyWriter)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let name = self.key.take().ok_or_else(|| Error("map value without a key".into()))?;
        self.member(Cow::Owned(name), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// Map keys: strings, or what serde_json turns into strings (integers, chars, bools).
struct KeyWriter;

macro_rules! displayed_keys {
    ($($method:ident: $type:ty),*) => {$(
        fn $method(self, v: $type) -> Result<String, Error> {
            Ok(v.to_string())
        }
    )*};
}

impl ser::Serializer for KeyWriter {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }
    // serde_json writes these keys as their text.
    displayed_keys!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64);
    displayed_keys!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    fn serialize_f32(self, _: f32) -> Result<String, Error> {
        Err(Error("a float as a map key".into()))
    }
    fn serialize_f64(self, _: f64) -> Result<String, Error> {
        Err(Error("a float as a map key".into()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(Error("bytes as a map key".into()))
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(Error("null as a map key".into()))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(Error("null as a map key".into()))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(Error("a unit struct as a map key".into()))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<String, Error> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<String, Error> {
        Err(Error("an enum as a map key".into()))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error("a sequence as a map key".into()))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error("a tuple as a map key".into()))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error("a tuple as a map key".into()))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error("a tuple as a map key".into()))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error("a map as a map key".into()))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(Error("a struct as a map key".into()))
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error("a struct as a map key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::to_canonical;
    use crate::evidence::canonical::canonical;
    use serde::Serialize;

    /// What a verifier computes: the text, parsed, canonicalized.
    fn through_text<T: Serialize>(value: &T) -> Vec<u8> {
        canonical(&serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap())
    }

    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Body {
        Words { confidence: f32, words: Vec<(String, f32)> },
        Empty,
    }

    #[derive(Serialize)]
    struct Sample {
        zeta: u64,
        alpha: Option<String>,
        none: Option<u8>,
        body: Vec<Body>,
        params: serde_json::Map<String, serde_json::Value>,
        big: u64,
        negative: i64,
        nan: f32,
        wide: f64,
        #[serde(rename = "\u{fb33}")]
        hebrew: bool,
        #[serde(rename = "\u{1f600}")]
        emoji: bool,
        tuple: (u8, char),
        unit: (),
    }

    #[test]
    fn same_bytes_as_the_text_round_trip() {
        let params = serde_json::json!({"temperature": 0.7, "b": [1, 2.5e-8, "x\u{1}\"\\"], "a": {"nested": -0.0}});
        let sample = Sample {
            zeta: 12,
            alpha: Some("тест \n\t\u{7f} 中文 \u{2028}".into()),
            none: None,
            body: vec![
                Body::Words { confidence: 0.93, words: vec![("a".into(), 0.1), ("b".into(), 1.0e-7), ("c".into(), 123456.79)] },
                Body::Empty,
            ],
            params: params.as_object().unwrap().clone(),
            big: u64::MAX,
            negative: -(1 << 60),
            nan: f32::NAN,
            wide: 1e21,
            hebrew: true,
            emoji: false,
            tuple: (7, 'é'),
            unit: (),
        };
        assert_eq!(String::from_utf8(to_canonical(&sample).unwrap()).unwrap(), String::from_utf8(through_text(&sample)).unwrap());
        for x in [0.1f32, 0.3, 1.0 / 3.0, 3.4028235e38, 1.4e-45, 16777217.0, 0.93, 0.999_999_9] {
            assert_eq!(to_canonical(&x).unwrap(), through_text(&x), "{x}");
        }
    }
}
