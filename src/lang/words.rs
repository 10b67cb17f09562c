//! The one word splitter of khard, with a POSIX shell's quoting rules:
//! words are separated by unquoted white space; single quotes keep
//! everything literally; double quotes keep everything but `\"` and `\\`;
//! an unquoted backslash keeps the next character. Used for `-e k=v` lists,
//! INI inventory lines, ssh_config lines and `ansible_ssh_common_args`
//! (which Ansible splits with Python's shlex, the same rules).

use std::fmt;

/// A word with its quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Any part of it was quoted (INI values: a quoted `1` stays a string).
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated(pub char);

impl fmt::Display for Unterminated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unterminated quote ({})", self.0)
    }
}

/// Splits `line` into words.
pub fn split(line: &str) -> Result<Vec<Word>, Unterminated> {
    let mut words = Vec::new();
    let mut cur: Option<Word> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            words.extend(cur.take());
            continue;
        }
        let w = cur.get_or_insert_with(|| Word {
            text: String::new(),
            quoted: false,
        });
        match c {
            '\'' => {
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.text.push(c),
                        None => return Err(Unterminated('\'')),
                    }
                }
            }
            '"' => {
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.text.push(c),
                            Some(c) => {
                                w.text.push('\\');
                                w.text.push(c);
                            }
                            None => return Err(Unterminated('"')),
                        },
                        Some(c) => w.text.push(c),
                        None => return Err(Unterminated('"')),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    w.text.push(c);
                }
            }
            c => w.text.push(c),
        }
    }
    words.extend(cur);
    Ok(words)
}

/// The texts of the words of `line`.
pub fn texts(line: &str) -> Result<Vec<String>, Unterminated> {
    Ok(split(line)?.into_iter().map(|w| w.text).collect())
}

/// An OpenSSH option (`Key value`, `Key=value`, `Key = value`): the key
/// ends at the first white space or `=`.
pub fn ssh_option(line: &str) -> (&str, &str) {
    let line = line.trim();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (key, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(line: &str) -> Vec<String> {
        texts(line).unwrap()
    }

    #[test]
    fn quotes_as_a_shell_reads_them() {
        assert_eq!(t("a  b\tc"), ["a", "b", "c"]);
        assert_eq!(t(r#"k="x y" 'p q'"#), ["k=x y", "p q"]);
        assert_eq!(t(r#"'a "b"' "c 'd'""#), [r#"a "b""#, "c 'd'"]);
        assert_eq!(t(r#""a \"b\" \\ \n""#), [r#"a "b" \ \n"#]);
        assert_eq!(t(r"a\ b"), ["a b"]);
        assert_eq!(t(r#"'' x"#), ["", "x"]);
        assert_eq!(t(""), Vec::<String>::new());
        assert_eq!(split("'open"), Err(Unterminated('\'')));
        assert_eq!(split("\"open"), Err(Unterminated('"')));
    }

    #[test]
    fn a_quoted_part_marks_the_word() {
        let w = split(r#"a=1 b="1""#).unwrap();
        assert!(!w[0].quoted && w[1].quoted);
        assert_eq!(w[1].text, "b=1");
    }

    #[test]
    fn ssh_options_split_at_the_first_space_or_equals() {
        assert_eq!(ssh_option("ProxyJump=a,b"), ("ProxyJump", "a,b"));
        assert_eq!(
            ssh_option("ProxyCommand ssh -o A=b -W %h:%p gw"),
            ("ProxyCommand", "ssh -o A=b -W %h:%p gw")
        );
        assert_eq!(ssh_option("User = x"), ("User", "x"));
        assert_eq!(ssh_option("="), ("", ""));
    }
}
