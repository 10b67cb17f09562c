//! Why a task cannot be decided or done on a host: the message the report
//! shows, and whether a probed fact was missing.

use std::fmt;

use crate::lang::error::LangError;

#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// Its `when:` or a template of its arguments could not be evaluated.
    Lang(LangError),
    /// Its arguments or the host's state make it impossible (a relative
    /// path, content that fails validation, a folder where a file should be).
    Refused(String),
}

impl TaskError {
    /// The undefined variable behind the error, if that is what it is.
    pub fn undefined_var(&self) -> Option<&str> {
        match self {
            TaskError::Lang(e) => e.undefined_var(),
            TaskError::Refused(_) => None,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Lang(e) => e.fmt(f),
            TaskError::Refused(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<LangError> for TaskError {
    fn from(e: LangError) -> Self {
        TaskError::Lang(e)
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        TaskError::Refused(message)
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        TaskError::Refused(message.to_owned())
    }
}
