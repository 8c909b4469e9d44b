//! Diagnostics: every problem found while loading configuration, with the
//! file and line it comes from.
//!
//! Loading never stops at the first problem: each loader pushes what it finds
//! into a [`Diagnostics`] and carries on, so a user fixes a broken file in one
//! pass.

use std::fmt;
use std::sync::Arc;

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file as the user named it (a path, or `<embedded>/name`).
    pub file: Arc<str>,
    /// 1-based line; 0 when the problem is about the whole file.
    pub line: u32,
}

impl Location {
    pub fn new(file: &Arc<str>, line: u32) -> Self {
        Self {
            file: Arc::clone(file),
            line,
        }
    }

    /// The 1-based line of byte `offset` in `text`.
    pub fn at_offset(file: &Arc<str>, text: &str, offset: usize) -> Self {
        let upto = text.get(..offset.min(text.len())).unwrap_or(text);
        let line = upto.bytes().filter(|&b| b == b'\n').count() + 1;
        Self::new(file, u32::try_from(line).unwrap_or(u32::MAX))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    /// Not a problem: what was read and what it means here (a DigitalPy
    /// file part that has no meaning in zmanager, say).
    Note,
}

/// One problem, where it is, and how bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{}: {level}: {}", self.location, self.message)
    }
}

/// Everything found so far, in the order found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Error, location, message.into());
    }

    pub fn warning(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Warning, location, message.into());
    }

    pub fn note(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Note, location, message.into());
    }

    fn push(&mut self, severity: Severity, location: Location, message: String) {
        self.items.push(Diagnostic {
            severity,
            location,
            message,
        });
    }

    /// Reports a TOML parse or shape error at the line its span points to.
    pub fn toml_error(&mut self, file: &Arc<str>, text: &str, error: &toml::de::Error) {
        let location = match error.span() {
            Some(span) => Location::at_offset(file, text, span.start),
            None => Location::new(file, 0),
        };
        self.error(location, error.message().trim().to_owned());
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn notes(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Note)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sorted by file, then line, errors before warnings before notes at
    /// the same line.
    pub fn sorted(mut self) -> Self {
        self.items
            .sort_by(|a, b| (&a.location, a.severity).cmp(&(&b.location, b.severity)));
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_offset() {
        let file: Arc<str> = Arc::from("f.toml");
        let text = "a\nbb\nccc";
        assert_eq!(Location::at_offset(&file, text, 0).line, 1);
        assert_eq!(Location::at_offset(&file, text, 2).line, 2);
        assert_eq!(Location::at_offset(&file, text, 5).line, 3);
        assert_eq!(Location::at_offset(&file, text, 999).line, 3);
    }

    #[test]
    fn collects_and_formats() {
        let file: Arc<str> = Arc::from("f.ini");
        let mut d = Diagnostics::default();
        d.warning(Location::new(&file, 3), "odd");
        d.note(Location::new(&file, 3), "read");
        d.error(Location::new(&file, 1), "bad");
        assert!(d.has_errors());
        assert_eq!(d.errors().count(), 1);
        assert_eq!(d.notes().count(), 1);
        assert_eq!(
            d.sorted().to_string(),
            "f.ini:1: error: bad\nf.ini:3: warning: odd\nf.ini:3: note: read\n"
        );
    }
}
