//! `--format json`: one JSON document on stdout at the end of the run, with
//! every event, the recap per host and the exit code.

use std::io::Write;

use super::{Sink, Summary};

pub struct Json {
    pub out: Box<dyn Write + Send>,
}

impl Sink for Json {
    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        serde_json::to_writer_pretty(&mut self.out, s)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(self.out))
            .and_then(|()| self.out.flush())
            .map_err(|e| format!("the JSON report could not be written to stdout: {e}"))
    }
}
