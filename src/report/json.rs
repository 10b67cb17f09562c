//! `--format json`: one JSON document on stdout at the end of the run, with
//! every event, the recap per host and the exit code.

use std::io::Write;

use super::{Sink, Summary};

pub struct Json {
    pub out: Box<dyn Write + Send>,
}

impl Sink for Json {
    fn finish(&mut self, s: &Summary) {
        let _ = serde_json::to_writer_pretty(&mut self.out, s);
        let _ = writeln!(self.out);
        let _ = self.out.flush();
    }
}
