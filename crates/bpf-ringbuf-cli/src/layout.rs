//! `--layout 'u32 pid, u32 tgid, u64 ts, char[16] comm'`: a record's fields,
//! decoded for every output format.
//!
//! Types: `u8 u16 u32 u64 i8 i16 i32 i64` (little-endian), `char[N]` (text
//! up to the first NUL), `u8[N]` or `bytes[N]` (shown in hex). Fields are
//! laid out as a C compiler lays out a struct on x86_64 and arm64: each
//! integer at a multiple of its size, arrays at any byte. Write padding as a
//! field (`u8[4] pad`) where the producer packs differently.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer of this many bytes.
    Unsigned(usize),
    Signed(usize),
    /// `char[N]`.
    Text(usize),
    /// `u8[N]`.
    Bytes(usize),
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Unsigned(n) | Kind::Signed(n) | Kind::Text(n) | Kind::Bytes(n) => n,
        }
    }
    fn align(self) -> usize {
        match self {
            Kind::Unsigned(n) | Kind::Signed(n) => n,
            Kind::Text(_) | Kind::Bytes(_) => 1,
        }
    }
}

/// One named field at its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: Kind,
    pub offset: usize,
}

/// A parsed `--layout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub fields: Vec<Field>,
    /// Bytes up to the end of the last field.
    pub size: usize,
}

/// One decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    U(u64),
    I(i64),
    Text(String),
    Bytes(Vec<u8>),
    /// The record ends before this field.
    Missing,
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::U(v) => write!(f, "{v}"),
            FieldValue::I(v) => write!(f, "{v}"),
            FieldValue::Text(s) => write!(f, "{s:?}"),
            FieldValue::Bytes(b) => f.write_str(&hex(b)),
            FieldValue::Missing => f.write_str("<missing>"),
        }
    }
}

/// Lower-case hex of every byte, no separators.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn parse_type(t: &str) -> Result<Kind, String> {
    let scalar = |t: &str| match t {
        "u8" => Some(Kind::Unsigned(1)),
        "u16" => Some(Kind::Unsigned(2)),
        "u32" => Some(Kind::Unsigned(4)),
        "u64" => Some(Kind::Unsigned(8)),
        "i8" => Some(Kind::Signed(1)),
        "i16" => Some(Kind::Signed(2)),
        "i32" => Some(Kind::Signed(4)),
        "i64" => Some(Kind::Signed(8)),
        _ => None,
    };
    if let Some(k) = scalar(t) {
        return Ok(k);
    }
    let unknown = || {
        format!("unknown type {t:?} (use u8, u16, u32, u64, i8, i16, i32, i64, char[N] or u8[N])")
    };
    let (base, rest) = t.split_once('[').ok_or_else(unknown)?;
    let n = rest
        .strip_suffix(']')
        .ok_or_else(|| format!("{t:?}: missing ']'"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("{t:?}: array length {n:?} is not a number"))?;
    if n == 0 || n > 1 << 20 {
        return Err(format!("{t:?}: array length must be 1 to {}", 1 << 20));
    }
    match base.trim() {
        "char" => Ok(Kind::Text(n)),
        "u8" | "bytes" => Ok(Kind::Bytes(n)),
        _ => Err(unknown()),
    }
}

impl Layout {
    /// Parses `TYPE NAME, TYPE NAME, ...`.
    pub fn parse(spec: &str) -> Result<Layout, String> {
        let mut fields: Vec<Field> = Vec::new();
        let mut offset = 0usize;
        for (i, part) in spec.split(',').enumerate() {
            let part = part.trim();
            let at = |msg: String| format!("field {} ({part:?}): {msg}", i + 1);
            let Some((ty, name)) = part.rsplit_once(char::is_whitespace) else {
                return Err(at("expected TYPE NAME, e.g. `u32 pid`".into()));
            };
            let kind = parse_type(ty.trim()).map_err(at)?;
            let ok_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok_name {
                return Err(at(format!("{name:?} is not a field name")));
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(at(format!("{name:?} appears twice")));
            }
            offset = offset.next_multiple_of(kind.align());
            fields.push(Field {
                name: name.to_string(),
                kind,
                offset,
            });
            offset += kind.size();
        }
        Ok(Layout {
            fields,
            size: offset,
        })
    }

    /// Each field's value in `rec` (`Missing` where the record is too short).
    pub fn decode(&self, rec: &[u8]) -> Vec<(&str, FieldValue)> {
        self.fields
            .iter()
            .map(|f| {
                let v = match rec.get(f.offset..f.offset + f.kind.size()) {
                    None => FieldValue::Missing,
                    Some(b) => match f.kind {
                        Kind::Unsigned(_) => FieldValue::U(le(b)),
                        Kind::Signed(n) => {
                            let shift = 64 - 8 * n as u32;
                            FieldValue::I(((le(b) << shift) as i64) >> shift)
                        }
                        Kind::Text(_) => {
                            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                            FieldValue::Text(String::from_utf8_lossy(&b[..end]).into_owned())
                        }
                        Kind::Bytes(_) => FieldValue::Bytes(b.to_vec()),
                    },
                };
                (f.name.as_str(), v)
            })
            .collect()
    }

    /// `pid=1 comm="bash"`.
    pub fn text(&self, rec: &[u8]) -> String {
        let mut s = String::new();
        for (i, (name, v)) in self.decode(rec).into_iter().enumerate() {
            let _ = write!(s, "{}{name}={v}", if i > 0 { " " } else { "" });
        }
        s
    }

    /// `{"pid": 1, "comm": "bash"}` (missing fields are null, bytes hex).
    pub fn json(&self, rec: &[u8]) -> Value {
        let mut m = Map::new();
        for (name, v) in self.decode(rec) {
            let v = match v {
                FieldValue::U(x) => Value::from(x),
                FieldValue::I(x) => Value::from(x),
                FieldValue::Text(s) => Value::from(s),
                FieldValue::Bytes(b) => Value::from(hex(&b)),
                FieldValue::Missing => Value::Null,
            };
            m.insert(name.to_string(), v);
        }
        Value::Object(m)
    }
}

/// A little-endian integer of up to 8 bytes.
fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example_with_c_offsets() {
        let l = Layout::parse("u32 pid, u32 tgid, u64 ts, char[16] comm").unwrap();
        let offs: Vec<_> = l
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset))
            .collect();
        assert_eq!(offs, [("pid", 0), ("tgid", 4), ("ts", 8), ("comm", 16)]);
        assert_eq!(l.size, 32);
        // Natural alignment: a u64 after a u8 starts at 8.
        let l = Layout::parse("u8 a, u64 b, u8[3] c, u16 d").unwrap();
        let offs: Vec<_> = l.fields.iter().map(|f| f.offset).collect();
        assert_eq!(offs, [0, 8, 16, 20]);
        assert_eq!(l.size, 22);
    }

    #[test]
    fn decodes_every_kind() {
        let l = Layout::parse("u16 a, i16 b, i32 c, char[4] s, bytes[2] raw, u64 gone").unwrap();
        let mut rec = vec![];
        rec.extend(0xbeefu16.to_le_bytes());
        rec.extend((-2i16).to_le_bytes());
        rec.extend((-70000i32).to_le_bytes());
        rec.extend(b"hi\0x");
        rec.extend([0xab, 0x01]);
        let v = l.decode(&rec);
        assert_eq!(v[0], ("a", FieldValue::U(0xbeef)));
        assert_eq!(v[1], ("b", FieldValue::I(-2)));
        assert_eq!(v[2], ("c", FieldValue::I(-70000)));
        assert_eq!(v[3], ("s", FieldValue::Text("hi".into())));
        assert_eq!(v[4], ("raw", FieldValue::Bytes(vec![0xab, 1])));
        assert_eq!(v[5], ("gone", FieldValue::Missing));
        assert_eq!(
            l.text(&rec),
            r#"a=48879 b=-2 c=-70000 s="hi" raw=ab01 gone=<missing>"#
        );
        assert_eq!(
            l.json(&rec).to_string(),
            r#"{"a":48879,"b":-2,"c":-70000,"s":"hi","raw":"ab01","gone":null}"#
        );
    }

    #[test]
    fn malformed_layouts_say_which_field() {
        for (spec, want) in [
            ("u33 x", "field 1 (\"u33 x\"): unknown type \"u33\""),
            ("u32 pid, u32", "field 2 (\"u32\"): expected TYPE NAME"),
            ("u32 a, u32 a", "\"a\" appears twice"),
            ("char[x] s", "array length \"x\" is not a number"),
            ("char[16 s", "missing ']'"),
            ("char[0] s", "array length must be"),
            ("u32 9lives", "\"9lives\" is not a field name"),
            ("", "field 1 (\"\"): expected TYPE NAME"),
            ("float f", "unknown type \"float\""),
        ] {
            let err = Layout::parse(spec).unwrap_err();
            assert!(err.contains(want), "{spec:?}: {err}");
        }
    }
}
