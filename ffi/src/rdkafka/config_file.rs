//! `KAFKA_E2EE_CONFIG`: the `e2ee.*` settings from a file, for clients that
//! cannot put them after `plugin.library.paths`.
//!
//! librdkafka applies properties in the order it is given them, and an
//! `e2ee.*` property is known only once `plugin.library.paths` has loaded the
//! plugin. Bindings that keep properties in a map (rust-rdkafka's
//! `ClientConfig`, confluent-kafka-go's `ConfigMap`) pass them in no fixed
//! order, so `e2ee.*` properties fail there now and then ("No such
//! configuration property"). The file is named by an environment variable,
//! not by a property, because any property would have the same order
//! problem; it is read by `conf_init`, which runs while
//! `plugin.library.paths` is being set, so whatever order the rest comes in,
//! the settings are there. One file rather than one variable per property so
//! that a misspelt name is an error (as an unknown `e2ee.*` property is), not
//! a setting silently left at its default.
//!
//! Precedence: an `e2ee.*` property set on the configuration overrides the
//! file's value; the file overrides the defaults. A variable that is set but
//! names a file that cannot be read, or holds anything but valid `e2ee.*`
//! settings, fails client creation (`plugin.library.paths` fails) with a
//! message naming `KAFKA_E2EE_CONFIG`, the line or property, and the fix.

use crate::host::PROPERTIES;

/// The environment variable naming the file.
pub const VAR: &str = "KAFKA_E2EE_CONFIG";

/// The file's settings (empty if the variable is unset or empty), checked
/// as `e2ee.*` properties are when set.
pub fn from_env() -> Result<Vec<(String, String)>, String> {
    let Some(path) = std::env::var_os(VAR).filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    // The variable and the problem first, the path last: apps cut
    // librdkafka's error string short (confluent-kafka-go at 127 bytes).
    let shown = path.to_string_lossy().into_owned();
    let fix = format!(
        "fix the file, or unset {VAR} and set the e2ee.* properties after plugin.library.paths \
         (file {shown})"
    );
    let text = std::fs::read(&path).map_err(|e| {
        format!(
            "kafka-e2ee: {VAR}: cannot read {shown}: {e}; {VAR} must name a properties file of \
             e2ee.* settings, or be unset"
        )
    })?;
    let text =
        String::from_utf8(text).map_err(|_| format!("kafka-e2ee: {VAR}: not UTF-8 text; {fix}"))?;
    let props = parse(&text).map_err(|e| format!("kafka-e2ee: {VAR}: {e}; {fix}"))?;
    super::check_partial(&props, "").map_err(|e| format!("kafka-e2ee: {VAR}: {e}; {fix}"))?;
    Ok(props)
}

/// `name=value` lines (both trimmed); blank lines and lines starting with
/// `#` are skipped. Every name must be an `e2ee.*` property of the table,
/// each at most once.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {n}: expected name=value, got '{line}'"));
        };
        let name = name.trim();
        if !name.starts_with("e2ee.") {
            return Err(format!(
                "line {n}: '{name}' is not an e2ee.* property (librdkafka's own properties belong \
                 in the client's configuration)"
            ));
        }
        if !PROPERTIES.iter().any(|(p, _, _)| *p == name) {
            let known: Vec<&str> = PROPERTIES.iter().map(|p| p.0).collect();
            return Err(format!(
                "line {n}: {name}: unknown property; the e2ee.* properties are: {}",
                known.join(", ")
            ));
        }
        if out.iter().any(|(k, _)| k == name) {
            return Err(format!("line {n}: {name} is set twice"));
        }
        out.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse;

    #[test]
    fn parses_e2ee_lines_and_refuses_the_rest() {
        let p = parse("# c\n\n e2ee.credential = /a b \ne2ee.topics=x.*\n").unwrap();
        assert_eq!(
            p,
            vec![
                ("e2ee.credential".into(), "/a b".into()),
                ("e2ee.topics".into(), "x.*".into())
            ]
        );
        for (text, want) in [
            ("e2ee.credential", "line 1: expected name=value"),
            (
                "\nbootstrap.servers=x",
                "line 2: 'bootstrap.servers' is not an e2ee.* property",
            ),
            (
                "e2ee.credentials=x",
                "line 1: e2ee.credentials: unknown property",
            ),
            (
                "e2ee.topics=a\ne2ee.topics=b",
                "line 2: e2ee.topics is set twice",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
