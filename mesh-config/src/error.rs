//! Errors and warnings that name the file, the line, the object and the field.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Where a diagnostic points: every part is optional because objects from the Kubernetes API
/// have no file, and a file that cannot be read has no object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Place {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// `Kind namespace/name`, e.g. `VirtualService default/reviews`.
    pub object: Option<String>,
    /// The field path, e.g. `spec.http[0].route[1].weight`.
    pub field: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            wrote = true;
        } else if let Some(line) = self.line {
            write!(f, "line {line}")?;
            wrote = true;
        }
        if let Some(object) = &self.object {
            if wrote {
                f.write_str(": ")?;
            }
            f.write_str(object)?;
            wrote = true;
        }
        if let Some(field) = &self.field {
            if wrote {
                f.write_str(": ")?;
            }
            f.write_str(field)?;
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ErrorKind {
    #[error("cannot read: {0}")]
    Io(String),
    #[error("YAML syntax: {0}")]
    Syntax(String),
    #[error("tab character in indentation (YAML indents with spaces only)")]
    TabIndentation,
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Invalid(String),
    /// The input is over one of its budgets (see `yaml::limits`); none of it was used.
    #[error("refused: over the {limit} limit of {max}{}", limit_unit(*limit))]
    LimitExceeded {
        limit: crate::yaml::limits::Limit,
        max: usize,
    },
}

fn limit_unit(limit: crate::yaml::limits::Limit) -> &'static str {
    use crate::yaml::limits::Limit;
    match limit {
        Limit::InputBytes => " bytes",
        Limit::Documents => " documents",
        Limit::Depth => " levels of nesting",
        Limit::Nodes => " nodes (after alias expansion)",
        Limit::AliasedNodes => " nodes copied by aliases",
        Limit::ExpandedBytes => " bytes of scalars (after alias expansion)",
    }
}

impl ErrorKind {
    /// The budget this error is about, if it is a refusal over one.
    pub fn limit(&self) -> Option<crate::yaml::limits::Limit> {
        match self {
            ErrorKind::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ConfigError {
    pub place: Place,
    pub kind: ErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self.place.to_string();
        if place.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{place}: {}", self.kind)
        }
    }
}

impl ConfigError {
    pub fn new(place: Place, kind: ErrorKind) -> Self {
        ConfigError { place, kind }
    }

    pub fn invalid(place: Place, message: impl Into<String>) -> Self {
        ConfigError::new(place, ErrorKind::Invalid(message.into()))
    }
}

/// A warning: the input was accepted, but something was skipped or assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigWarning {
    pub place: Place,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self.place.to_string();
        if place.is_empty() {
            write!(f, "warning: {}", self.message)
        } else {
            write!(f, "{place}: warning: {}", self.message)
        }
    }
}

/// All the errors of one load or validation, never just the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The result of `validate_paths`: every error and warning, one line each when displayed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
    /// How many objects were read.
    pub objects: usize,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "{e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "{w}")?;
        }
        Ok(())
    }
}
