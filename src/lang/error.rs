//! Why an expression or a template could not be evaluated for a host.

use std::fmt;

/// An evaluation error of the `when:` language or of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum LangError {
    /// A variable the text uses is not defined for this host. The engine
    /// tells a probed fact (k3s_version, k3s_era, …) that is missing because
    /// k3s did not answer from a plain typo by `var`.
    Undefined { var: String, message: String },
    /// Anything else; the message says what and where.
    Invalid(String),
}

impl LangError {
    /// The undefined variable's top-level name, if that is the error.
    pub fn undefined_var(&self) -> Option<&str> {
        match self {
            LangError::Undefined { var, .. } => var.split(['.', '[']).next(),
            LangError::Invalid(_) => None,
        }
    }

    /// The same error, with `place: ` in front of its message.
    pub fn at(self, place: &str) -> LangError {
        match self {
            LangError::Undefined { var, message } => LangError::Undefined {
                var,
                message: format!("{place}: {message}"),
            },
            LangError::Invalid(message) => LangError::Invalid(format!("{place}: {message}")),
        }
    }
}

impl fmt::Display for LangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LangError::Undefined { message, .. } | LangError::Invalid(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for LangError {}

impl From<String> for LangError {
    fn from(message: String) -> Self {
        LangError::Invalid(message)
    }
}
