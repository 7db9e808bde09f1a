//! Client configuration files: Java `.properties` (what `--producer.config`
//! and `--command-config` take) and librdkafka's `key=value` files (kcat -F,
//! confluent-kafka examples). librdkafka's format is a subset of Java's, so
//! one reader serves both: `key=value`, `key: value` or `key value`; `#` and
//! `!` comments; a trailing `\` continues a line; `\t \n \r \f \uXXXX` escapes.

/// One property and the line it started on (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// The properties in file order. A key given twice keeps both entries; the
/// last one wins in [`get`].
pub fn parse(text: &str) -> Vec<Property> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let first = raw.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes.
        let mut logical = first.to_owned();
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        out.push(Property {
            key: unescape(&key),
            value: unescape(value.trim_end_matches(['\r'])),
            line: i + 1,
        });
    }
    out
}

/// The value of `key` (the last one given), if any.
pub fn get<'a>(props: &'a [Property], key: &str) -> Option<&'a str> {
    props
        .iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn ends_with_continuation(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn split_key_value(line: &str) -> (String, &str) {
    let mut key = String::new();
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            key.push('\\');
            key.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => return (key, line.get(i + 1..).unwrap_or("").trim_start()),
            c if c.is_whitespace() => {
                let rest = line.get(i..).unwrap_or("").trim_start();
                let rest = rest.strip_prefix(['=', ':']).map_or(rest, str::trim_start);
                return (key, rest);
            }
            c => key.push(c),
        }
    }
    (key, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_and_librdkafka_styles() {
        let text = "\u{feff}# comment\n! also\n\nbootstrap.servers=127.0.0.1:9092\n\
                    e2ee.credential : /etc/a b.cred\n\
                    e2ee.trust /etc/trust\n\
                    sasl.jaas.config=org.Foo required \\\n    username=\"u\";\n\
                    path=C:\\\\x\\u0041\n\
                    e2ee.topics=a\n e2ee.topics = b \n";
        let p = parse(text);
        assert_eq!(get(&p, "bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(get(&p, "e2ee.credential"), Some("/etc/a b.cred"));
        assert_eq!(get(&p, "e2ee.trust"), Some("/etc/trust"));
        assert_eq!(
            get(&p, "sasl.jaas.config"),
            Some("org.Foo required username=\"u\";")
        );
        assert_eq!(get(&p, "path"), Some("C:\\xA"));
        assert_eq!(get(&p, "e2ee.topics"), Some("b "));
        assert_eq!(p.iter().find(|x| x.key == "e2ee.trust").unwrap().line, 6);
    }
}
