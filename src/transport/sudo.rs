//! sudo with a password, Ansible's way: a random prompt and a random marker
//! per run; the password goes on stdin only after sudo printed our prompt,
//! and the script only after the marker proved we are root. A second prompt
//! means a wrong password: we stop at once (no retries, no lockouts).

/// sudo answered, and refused (a wrong password, no sudo rights): a failure
/// of that host's setup, not a lost connection.
#[derive(Debug)]
pub struct BecomeFailed(pub String);

impl std::fmt::Display for BecomeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BecomeFailed {}

/// Most output sudo may print before the shell starts (a prompt, a
/// lecture): past it the host is refused, and the buffers stay bounded.
const MAX_BEFORE_SHELL: usize = 64 * 1024;

/// What the exec loop must do after a chunk of output.
#[derive(Debug, PartialEq)]
pub enum Step {
    Wait,
    SendPassword,
    /// Escalated: send the script; `output` is what followed the marker.
    Escalated {
        output: Vec<u8>,
    },
    Fail(String),
}

pub struct Escalation {
    pub prompt: String,
    pub marker: String,
    sent_password: bool,
    done: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Escalation {
    pub fn new(nonce: &str) -> Escalation {
        Escalation {
            prompt: format!("[khard-sudo-{nonce}] password:"),
            marker: format!("KHARD-BECOME-{nonce}"),
            sent_password: false,
            done: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// The command line: sudo reads the password from stdin (-S), then the
    /// shell prints the marker and reads the script from the same stdin.
    pub fn command(&self, user: &str) -> String {
        use crate::shell::quote;
        format!(
            "sudo -S -H -p {} -u {} -- /bin/sh -c {}",
            quote(&self.prompt),
            quote(user),
            quote(&format!("echo {}; exec /bin/sh -s", self.marker))
        )
    }

    /// A chunk of the exec's output, from stdout or stderr.
    pub fn on_output(&mut self, data: &[u8], to_stderr: bool) -> Step {
        if to_stderr {
            self.on_stderr(data)
        } else {
            self.on_stdout(data)
        }
    }

    pub fn on_stdout(&mut self, data: &[u8]) -> Step {
        self.stdout.extend_from_slice(data);
        if self.stdout.len() > MAX_BEFORE_SHELL {
            return Step::Fail(format!(
                "sudo printed more than {MAX_BEFORE_SHELL} bytes before the shell started"
            ));
        }
        let text = String::from_utf8_lossy(&self.stdout);
        match text.find(&self.marker) {
            Some(at) => {
                self.done = true;
                let rest = text[at + self.marker.len()..]
                    .trim_start_matches('\n')
                    .as_bytes()
                    .to_vec();
                Step::Escalated { output: rest }
            }
            None => Step::Wait,
        }
    }

    pub fn on_stderr(&mut self, data: &[u8]) -> Step {
        self.stderr.extend_from_slice(data);
        if self.stderr.len() > MAX_BEFORE_SHELL {
            return Step::Fail(format!(
                "sudo printed more than {MAX_BEFORE_SHELL} bytes before the shell started"
            ));
        }
        let text = String::from_utf8_lossy(&self.stderr).into_owned();
        let prompts = text.matches(&self.prompt).count();
        if prompts == 0 {
            return Step::Wait;
        }
        if prompts > 1 || self.sent_password {
            return Step::Fail("sudo: the become password (-K) was rejected".into());
        }
        self.sent_password = true;
        self.stderr.clear();
        Step::SendPassword
    }
}

/// One piece of what an exec produced.
#[derive(Debug)]
pub(crate) enum Piece {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(u32),
}

/// The two ends of one exec, over SSH or a local child process: what the
/// shared loop ([`drive`]) needs to read output, answer sudo, and send the
/// script.
pub(crate) trait Exec {
    /// The next piece of output; None once the command's output has ended.
    async fn next(&mut self) -> anyhow::Result<Option<Piece>>;
    /// Writes to the command's stdin now (sudo's password line).
    async fn write(&mut self, data: &[u8]) -> anyhow::Result<()>;
    /// Sends the script, then the end of input, without holding up the reads
    /// (a script larger than the pipe would otherwise dead-lock).
    fn send_script(&mut self, script: Vec<u8>);
    /// Stops the command: sudo refused the password.
    async fn abort(&mut self);
}

/// Runs one exec to its end: collects output (bounded), answers sudo's
/// prompt with the password when escalating with one, and sends the script
/// only once the marker proved the shell runs as the target user. The
/// script's stdout is also shown to `watch` as it arrives.
pub(crate) async fn drive(
    exec: &mut impl Exec,
    script: &[u8],
    escalation: Option<(Escalation, std::sync::Arc<String>)>,
    watch: super::Watch<'_>,
) -> anyhow::Result<super::ExecOutput> {
    let mut escalation = escalation;
    if escalation.is_none() {
        exec.send_script(script.to_vec());
    }
    let mut out = super::ExecOutput::default();
    while let Some(piece) = exec.next().await? {
        let (data, to_stderr) = match piece {
            Piece::Stdout(d) => (d, false),
            Piece::Stderr(d) => (d, true),
            Piece::Exit(status) => {
                out.status = Some(status);
                continue;
            }
        };
        let Some((esc, password)) = escalation.as_mut() else {
            if !to_stderr {
                watch(&data);
            }
            out.push(&data, to_stderr);
            continue;
        };
        match esc.on_output(&data, to_stderr) {
            Step::Wait => {}
            Step::SendPassword => exec.write(format!("{password}\n").as_bytes()).await?,
            Step::Escalated { output } => {
                watch(&output);
                out.push(&output, false);
                escalation = None;
                exec.send_script(script.to_vec());
            }
            Step::Fail(why) => {
                exec.abort().await;
                return Err(BecomeFailed(why).into());
            }
        }
    }
    if escalation.is_some() {
        let why = format!("sudo did not start the shell: {}", out.stderr_text());
        return Err(BecomeFailed(why).into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_once_then_script_after_the_marker() {
        let mut e = Escalation::new("n1");
        assert_eq!(e.on_stderr(b"[khard-sudo-n1] pass"), Step::Wait);
        assert_eq!(e.on_stderr(b"word:"), Step::SendPassword);
        assert_eq!(e.on_stdout(b"KHARD-BECO"), Step::Wait);
        assert_eq!(
            e.on_stdout(b"ME-n1\n@@out\n"),
            Step::Escalated {
                output: b"@@out\n".to_vec()
            }
        );
        assert!(e.done);
    }

    #[test]
    fn sudo_may_not_print_without_bound_before_the_shell() {
        let mut e = Escalation::new("n3");
        let chunk = vec![b'x'; 16 * 1024];
        let mut last = Step::Wait;
        for _ in 0..5 {
            last = e.on_stdout(&chunk);
        }
        assert!(
            matches!(last, Step::Fail(ref m) if m.contains("more than 65536 bytes")),
            "{last:?}"
        );
        let mut e = Escalation::new("n4");
        let mut last = Step::Wait;
        for _ in 0..5 {
            last = e.on_stderr(&chunk);
        }
        assert!(matches!(last, Step::Fail(_)), "{last:?}");
    }

    #[test]
    fn a_second_prompt_is_a_wrong_password() {
        let mut e = Escalation::new("n2");
        assert_eq!(
            e.on_stderr(b"[khard-sudo-n2] password:"),
            Step::SendPassword
        );
        assert!(matches!(
            e.on_stderr(b"Sorry, try again.\n[khard-sudo-n2] password:"),
            Step::Fail(_)
        ));
        let cmd = e.command("root");
        assert!(cmd.contains("sudo -S") && !cmd.contains("hunter"));
    }
}
