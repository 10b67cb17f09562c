//! Errors a user can fix, and the exit codes khard promises.

use std::fmt;

/// Exit codes, all distinct so that CI can tell "in sync" from "drift" from "broken".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Every host succeeded; in check mode, nothing would change.
    Ok = 0,
    /// Check mode found changes pending (drift).
    Drift = 2,
    /// A task failed on at least one host.
    Failed = 3,
    /// At least one host was unreachable, or its host key was refused.
    Unreachable = 4,
    /// Invalid input: flags, inventory, playbook, role or template. No host was contacted.
    Invalid = 5,
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The exit of a run whose outcome is `code` (as reports compute it).
    pub fn from_run_code(code: i32) -> Exit {
        match code {
            0 => Exit::Ok,
            2 => Exit::Drift,
            3 => Exit::Failed,
            4 => Exit::Unreachable,
            _ => Exit::Interrupted,
        }
    }
}

/// An error in what the user gave khard: it names the file, line and column
/// where possible and says what to do. Always maps to [`Exit::Invalid`].
#[derive(Debug, Clone)]
pub struct InputError {
    pub message: String,
}

impl InputError {
    pub fn new(message: impl Into<String>) -> Self {
        InputError {
            message: message.into(),
        }
    }

    /// An error at a place in a file; `line` and `column` are 1-based.
    pub fn at(file: &str, line: usize, column: usize, message: impl fmt::Display) -> Self {
        InputError::new(format!("{file}:{line}:{column}: {message}"))
    }

    pub fn in_file(file: &str, message: impl fmt::Display) -> Self {
        InputError::new(format!("{file}: {message}"))
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// Shorthand for returning an [`InputError`] from a function returning `anyhow::Result`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::error::InputError::new(format!($($arg)*))))
    };
}

/// True when the error (or anything it wraps) is invalid user input.
pub fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbours counts as one edit (`hsots` → `hosts`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("hsots", ["hosts", "vars"]), Some("hosts"));
        assert_eq!(did_you_mean("fiel", ["file", "directory"]), Some("file"));
        assert_eq!(did_you_mean("banana", ["file", "directory"]), None);
    }

    /// The codes are the ones `--help` documents (a test that the enum's
    /// codes are distinct could not fail: the compiler refuses duplicates).
    #[test]
    fn exit_codes_are_the_documented_ones() {
        for (exit, code) in [
            (Exit::Ok, 0),
            (Exit::Drift, 2),
            (Exit::Failed, 3),
            (Exit::Unreachable, 4),
            (Exit::Invalid, 5),
            (Exit::Interrupted, 130),
        ] {
            assert_eq!(exit.code(), code);
            let line = format!("\n  {code:<5}");
            assert!(
                crate::cli::EXIT_CODES.contains(&line),
                "--help documents no exit code {code}"
            );
        }
    }
}
