//! A UBJSON reader (the binary JSON XGBoost writes with `save_model("m.ubj")`), producing
//! `serde_json::Value` so both formats share one model schema. Supports the whole draft-12 type
//! set, including optimized (`$` type, `#` count) containers, which XGBoost uses for its arrays.

use serde_json::{Map, Number, Value};

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 128;

type Result<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        Err(format!("{what} at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
        {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => self.err("unexpected end of data"),
        }
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn int_of(&mut self, marker: u8) -> Result<i64> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array()?)),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            _ => return self.err("expected an integer length"),
        })
    }

    fn length(&mut self) -> Result<usize> {
        let marker = self.byte()?;
        let n = self.int_of(marker)?;
        let n = usize::try_from(n).or_else(|_| self.err("negative length"))?;
        // A length larger than the rest of the file cannot be right; refuse before allocating.
        if n > self.bytes.len() - self.pos.min(self.bytes.len()) {
            return self.err("length past the end of data");
        }
        Ok(n)
    }

    fn string_body(&mut self) -> Result<String> {
        let n = self.length()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).or_else(|_| self.err("string is not UTF-8"))
    }

    fn float(v: f64) -> Value {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }

    fn value_of(&mut self, marker: u8) -> Result<Value> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.int_of(marker)?),
            b'd' => Self::float(f64::from(f32::from_be_bytes(self.array()?))),
            b'D' => Self::float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String(char::from(self.byte()?).to_string()),
            b'S' => Value::String(self.string_body()?),
            b'H' => {
                let text = self.string_body()?;
                serde_json::from_str(&text).or_else(|_| self.err("bad high-precision number"))?
            }
            b'[' => self.container(false)?,
            b'{' => self.container(true)?,
            _ => return self.err(&format!("unknown UBJSON type marker 0x{marker:02x}")),
        })
    }

    fn container(&mut self, object: bool) -> Result<Value> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        let mut element_type = None;
        let mut count = None;
        if self.peek() == Some(b'$') {
            self.pos += 1;
            element_type = Some(self.byte()?);
            if self.peek() != Some(b'#') {
                return self.err("typed container without a count");
            }
        }
        if self.peek() == Some(b'#') {
            self.pos += 1;
            count = Some(self.length()?);
        }
        let read_value = |reader: &mut Self| -> Result<Value> {
            match element_type {
                Some(t) => reader.value_of(t),
                None => {
                    let marker = reader.byte()?;
                    reader.value_of(marker)
                }
            }
        };
        let value = if object {
            let mut map = Map::new();
            match count {
                Some(n) => {
                    for _ in 0..n {
                        let key = self.string_body()?;
                        let value = read_value(self)?;
                        map.insert(key, value);
                    }
                }
                None => loop {
                    while self.peek() == Some(b'N') {
                        self.pos += 1;
                    }
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        break;
                    }
                    let key = self.string_body()?;
                    let value = read_value(self)?;
                    map.insert(key, value);
                },
            }
            Value::Object(map)
        } else {
            let mut items = Vec::with_capacity(count.unwrap_or(0));
            match count {
                Some(n) => {
                    for _ in 0..n {
                        items.push(read_value(self)?);
                    }
                }
                None => loop {
                    while self.peek() == Some(b'N') {
                        self.pos += 1;
                    }
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        break;
                    }
                    items.push(read_value(self)?);
                },
            }
            Value::Array(items)
        };
        self.depth -= 1;
        Ok(value)
    }

    /// Reads one document that must span the whole input.
    pub fn document(mut self) -> Result<Value> {
        let marker = self.byte()?;
        let value = self.value_of(marker)?;
        if self.pos != self.bytes.len() {
            return self.err("trailing data after the document");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_typed_and_untyped_containers() {
        // {"a": [1, 2.5f32], "b": [$U#i3 1 2 3], "s": "hi"}
        let mut doc = vec![b'{'];
        doc.extend([b'i', 1, b'a', b'[', b'i', 1, b'd']);
        doc.extend(2.5f32.to_be_bytes());
        doc.push(b']');
        doc.extend([b'i', 1, b'b', b'[', b'$', b'U', b'#', b'i', 3, 1, 2, 3]);
        doc.extend([b'i', 1, b's', b'S', b'i', 2, b'h', b'i']);
        doc.push(b'}');
        let v = Reader::new(&doc).document().unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": [1, 2.5], "b": [1, 2, 3], "s": "hi"})
        );
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error() {
        assert!(Reader::new(b"{i\x05ab").document().is_err());
        assert!(
            Reader::new(b"[$d#L\x7f\xff\xff\xff\xff\xff\xff\xff")
                .document()
                .is_err()
        );
        assert!(Reader::new(b"[[[[").document().is_err());
        let deep = vec![b'['; 10_000];
        assert!(Reader::new(&deep).document().is_err());
    }
}
