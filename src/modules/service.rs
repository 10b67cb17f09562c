//! `service`: restart, reload or start a systemd unit (used by handlers).
//! A restart is an action, not a state: it always reports changed.

use serde::Deserialize;

use super::error::TaskError;
use super::{Change, Render};
use crate::lang::template::Text;
use crate::shell::quote;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(deserialize_with = "super::text")]
    pub name: Text,
    pub state: State,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Restarted,
    Reloaded,
    Started,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub name: String,
    pub state: State,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.name);
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        let name = r.text(&self.name)?;
        // systemd unit names: never an option, never shell text.
        let unit_chars =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\');
        if name.is_empty() || name.starts_with('-') || !name.chars().all(unit_chars) {
            return Err(format!("`{name}` is not a systemd unit name").into());
        }
        Ok(Desired {
            name,
            state: self.state,
        })
    }
}

impl Desired {
    pub fn change(&self) -> Change {
        let verb = match self.state {
            State::Restarted => "restart",
            State::Reloaded => "reload",
            State::Started => "start",
        };
        Change {
            details: vec![format!("{verb} {}", self.name)],
            content: None,
            certain: true,
            script: format!("systemctl {verb} {}", quote(&self.name)),
        }
    }
}
