//! Pegasus's `config.ini`, edited in place: `[section]` headers (section names may hold
//! dots, as `[apps.replica]` and `[pegasus.server]` do), `key = value` lines, comments
//! starting with `;` or `#`. An edit changes one value and keeps every other byte: comments,
//! order, blank lines, spacing and line endings. A section or key the file does not have is
//! refused, naming what it has, since a key the server does not read would be a silent no-op.
//!
//! ```
//! use rollout_core::conf::ini;
//!
//! let text = "; the meta\n[meta_server]\nserver_list = a:34601\n\n[replication]\nlb_interval_ms = 10000 ; ten seconds\n";
//! let edited = ini::set(text, "replication", "lb_interval_ms", "5000").unwrap();
//! assert_eq!(ini::get(&edited, "replication", "lb_interval_ms"), Some("5000"));
//! assert!(edited.contains("; ten seconds"));
//! assert!(ini::set(text, "replication", "no_such_key", "1").is_err());
//! ```

/// Why an edit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IniError {
    /// No such section.
    #[error("config.ini has no section [{section}] (it has: {have})")]
    NoSection {
        /// The section asked for.
        section: String,
        /// The sections the file has.
        have: String,
    },
    /// No such key in the section.
    #[error("section [{section}] of config.ini has no key {key:?} (it has: {have})")]
    NoKey {
        /// The section.
        section: String,
        /// The key asked for.
        key: String,
        /// The keys the section has.
        have: String,
    },
    /// A value that would break the file (a line break).
    #[error("the value for {key:?} holds a line break")]
    BadValue {
        /// The key.
        key: String,
    },
    /// `SECTION.KEY` without a dot.
    #[error("{0:?} is not SECTION.KEY")]
    NotSectionKey(String),
}

/// Splits `SECTION.KEY` at its last dot (sections may hold dots; keys do not).
///
/// # Errors
/// [`IniError::NotSectionKey`] without a dot, or with an empty side.
pub fn split_key(s: &str) -> Result<(&str, &str), IniError> {
    match s.rsplit_once('.') {
        Some((section, key)) if !section.is_empty() && !key.is_empty() => Ok((section, key)),
        _ => Err(IniError::NotSectionKey(s.to_string())),
    }
}

/// One line's meaning.
enum Line<'a> {
    Section(&'a str),
    /// A key, and the byte range of its value in the line (comment excluded).
    Pair(&'a str, std::ops::Range<usize>),
    Other,
}

fn parse(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.starts_with('[') {
        if let Some(end) = t.find(']') {
            return Line::Section(t[1..end].trim());
        }
        return Line::Other;
    }
    if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
        return Line::Other;
    }
    let Some(eq) = line.find('=') else {
        return Line::Other;
    };
    let key = line[..eq].trim();
    let rest = &line[eq + 1..];
    // The value ends at an inline comment (a `;` or `#` after whitespace) or the line end
    // (a trailing `\r` stays outside it).
    let body_end = rest.strip_suffix('\r').map_or(rest.len(), str::len);
    let mut end = body_end;
    let bytes = rest.as_bytes();
    for i in 0..body_end {
        if (bytes[i] == b';' || bytes[i] == b'#') && (i == 0 || bytes[i - 1].is_ascii_whitespace())
        {
            end = i;
            break;
        }
    }
    let value = &rest[..end];
    let lead = value.len() - value.trim_start().len();
    let trimmed = value.trim();
    let start = eq + 1 + lead;
    Line::Pair(key, start..start + trimmed.len())
}

/// The value of `key` in `section`, if the file has it.
pub fn get<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut current = "";
    for line in text.split('\n') {
        match parse(line) {
            Line::Section(s) => current = s,
            Line::Pair(k, range) if current == section && k == key => return Some(&line[range]),
            _ => {}
        }
    }
    None
}

/// `text` with `key` of `section` set to `value`, every other byte kept.
///
/// # Errors
/// The section or key is not in the file, or the value holds a line break.
pub fn set(text: &str, section: &str, key: &str, value: &str) -> Result<String, IniError> {
    if value.contains(['\n', '\r']) {
        return Err(IniError::BadValue { key: key.into() });
    }
    let mut current = "";
    let mut sections = Vec::new();
    let mut keys = Vec::new();
    let mut offset = 0;
    for line in text.split('\n') {
        match parse(line) {
            Line::Section(s) => {
                current = s;
                sections.push(s);
            }
            Line::Pair(k, range) if current == section => {
                if k == key {
                    let at = offset + range.start..offset + range.end;
                    let mut out = String::with_capacity(text.len() + value.len());
                    out.push_str(&text[..at.start]);
                    out.push_str(value);
                    out.push_str(&text[at.end..]);
                    return Ok(out);
                }
                keys.push(k);
            }
            _ => {}
        }
        offset += line.len() + 1;
    }
    if !sections.contains(&section) {
        return Err(IniError::NoSection {
            section: section.into(),
            have: sections.join(", "),
        });
    }
    Err(IniError::NoKey {
        section: section.into(),
        key: key.into(),
        have: keys.join(", "),
    })
}
