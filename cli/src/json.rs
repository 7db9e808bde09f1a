//! Just enough JSON output for `--json`: objects of strings, numbers,
//! booleans and string arrays.

use std::fmt::Write as _;

pub enum Value {
    Str(String),
    Num(u64),
    Bool(bool),
    List(Vec<String>),
    /// Already-encoded JSON (a nested object or array).
    Raw(String),
    Null,
}

/// A JSON array of already-encoded values.
pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// A string, or null.
pub fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Str(s.to_owned()))
}

pub fn object(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&string(key));
        out.push(':');
        match value {
            Value::Str(s) => out.push_str(&string(s)),
            Value::Num(n) => out.push_str(&n.to_string()),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Raw(raw) => out.push_str(raw),
            Value::Null => out.push_str("null"),
            Value::List(items) => {
                out.push('[');
                let items: Vec<String> = items.iter().map(|s| string(s)).collect();
                out.push_str(&items.join(","));
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(
            object(&[("a", Value::Num(1)), ("b", Value::List(vec!["x".into()]))]),
            "{\"a\":1,\"b\":[\"x\"]}"
        );
    }
}
