//! The line-oriented text form shared by the credential, trust and authority
//! key files: a versioned first line, then `field: base64` lines; blank lines
//! and `#` comments are ignored. Errors name the line and field, never the
//! value (which may be a secret).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::TrustError;

const KNOWN_HEADERS: [(&str, &str); 3] = [
    ("kafka-e2ee-credential ", "a credential file"),
    ("kafka-e2ee-trust ", "a trust file"),
    ("kafka-e2ee-authority ", "an authority key file"),
];

pub(super) struct TextFile<'a> {
    lines: Vec<Line<'a>>,
}

pub(super) struct Line<'a> {
    pub(super) file: &'static str,
    pub(super) number: usize,
    pub(super) key: &'a str,
    pub(super) value: &'a str,
}

impl Line<'_> {
    pub(super) fn error(&self, reason: &str) -> TrustError {
        TrustError::File {
            file: self.file,
            line: self.number,
            reason: reason.to_owned(),
        }
    }
}

impl<'a> TextFile<'a> {
    pub(super) fn parse(
        bytes: &'a [u8],
        file: &'static str,
        header: &'static str,
    ) -> Result<Self, TrustError> {
        let err = |line: usize, reason: String| TrustError::File { file, line, reason };
        let text = core::str::from_utf8(bytes)
            .map_err(|_| err(0, "not UTF-8 text; is this the right file?".to_owned()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut raw_lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = raw_lines.next().unwrap_or("").trim_end();
        if first != header {
            let (family, _) = header.split_at(header.find(' ').unwrap_or(header.len()) + 1);
            let reason = if let Some(version) = first.strip_prefix(family) {
                let version: String = version.chars().take(16).collect();
                format!(
                    "version {version:?} is not supported (expected `{header}`); \
                     upgrade kafka-e2ee or recreate the file"
                )
            } else if let Some((_, kind)) = KNOWN_HEADERS.iter().find(|(h, _)| first.starts_with(h))
            {
                format!("this is {kind}; expected a file starting with `{header}`")
            } else {
                format!("the first line must be `{header}`; is this the right file?")
            };
            return Err(err(1, reason));
        }
        let mut lines = Vec::new();
        for (i, raw) in raw_lines.enumerate() {
            let number = i + 2;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(err(number, "expected `field: value`".to_owned()));
            };
            lines.push(Line {
                file,
                number,
                key: key.trim(),
                value: value.trim(),
            });
        }
        Ok(Self { lines })
    }

    pub(super) fn lines(&self) -> impl Iterator<Item = &Line<'a>> {
        self.lines.iter()
    }
}

/// Decodes standard base64 (with padding) into a zeroized buffer.
pub(super) fn decode_b64(line: &Line<'_>, field: &str) -> Result<Zeroizing<Vec<u8>>, TrustError> {
    let mut out = Zeroizing::new(Vec::new());
    STANDARD
        .decode_vec(line.value, &mut out)
        .map_err(|_| line.error(&format!("`{field}` is not valid base64")))?;
    Ok(out)
}

/// Decodes a base64 32-byte key into a zeroized array.
pub(super) fn decode_key32(
    line: &Line<'_>,
    field: &str,
) -> Result<Zeroizing<[u8; 32]>, TrustError> {
    let bytes = decode_b64(line, field)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(line.error(&format!(
            "`{field}` must be 32 bytes, found {}; copy the whole value",
            bytes.len()
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}
