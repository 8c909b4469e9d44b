//! The INI dialect of DigitalPy's flow and action-mapping files.
//!
//! DigitalPy reads these with Python's `configparser` (`allow_no_value`, case
//! kept). This reader accepts the same files and keeps the line of every
//! entry, which general INI crates do not report; that is why it is written
//! here (see `docs/dependencies.md`). The rules:
//!
//! - `[name]` opens a section; a section name appears once per file;
//! - `key`, `key = value` or `key: value` is an entry (split at the first
//!   `=` or `:`, both sides trimmed);
//! - blank lines and lines starting with `;` or `#` (after indentation) are
//!   ignored; there are no inline comments, as in `configparser`.

use std::sync::Arc;

use crate::catalog::diagnostic::{Diagnostics, Location};

/// One `[section]` and its entries, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) line: u32,
    pub(crate) entries: Vec<Entry>,
}

/// One `key` or `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    pub(crate) line: u32,
}

/// Reads `text` into sections. Lines that cannot be read are reported in
/// `diagnostics` and skipped; the rest of the file is still read.
pub(crate) fn parse(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let at = || Location::new(file, line);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                diagnostics.error(
                    at(),
                    format!("section header {trimmed:?} has no closing `]`"),
                );
                continue;
            };
            let name = name.trim();
            if name.is_empty() {
                diagnostics.error(at(), "empty section name `[]`");
                continue;
            }
            if let Some(first) = sections.iter().find(|s| s.name == name) {
                diagnostics.error(
                    at(),
                    format!(
                        "section [{name}] appears twice in this file (first at line {})",
                        first.line
                    ),
                );
            }
            sections.push(Section {
                name: name.to_owned(),
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            diagnostics.error(at(), format!("{trimmed:?} is outside any [section]"));
            continue;
        };
        let (key, value) = match trimmed.find(['=', ':']) {
            Some(i) => (
                trimmed[..i].trim(),
                Some(trimmed[i + 1..].trim().to_owned()),
            ),
            None => (trimmed, None),
        };
        if key.is_empty() {
            diagnostics.error(at(), format!("{trimmed:?} has a value but no key"));
            continue;
        }
        section.entries.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<Section>, Diagnostics) {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("t.ini");
        (parse(&file, text, &mut d), d)
    }

    #[test]
    fn entries_with_and_without_values() {
        let (sections, d) =
            read("; comment\n[actionmapping]\n# another\n\n??a = x.Y.z\n  ?c?b:v  \n?c?d\nk =\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(sections.len(), 1);
        let s = &sections[0];
        assert_eq!((s.name.as_str(), s.line), ("actionmapping", 2));
        let got: Vec<_> = s
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("??a", Some("x.Y.z"), 5),
                ("?c?b", Some("v"), 6),
                ("?c?d", None, 7),
                ("k", Some(""), 8),
            ]
        );
    }

    #[test]
    fn reports_every_bad_line_and_goes_on() {
        let (sections, d) = read("orphan\n[open\n[]\n[a]\n= v\nok\n[a]\n");
        let lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        assert_eq!(lines, [1, 2, 3, 5, 7]);
        assert_eq!(sections[0].entries.len(), 1);
        assert!(
            d.to_string()
                .contains("appears twice in this file (first at line 4)")
        );
    }
}
