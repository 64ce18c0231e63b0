//! A replica that exited as soon as it started: how the process and Docker runtimes report it,
//! in the same words, with its exit status and the last lines it printed, so that a wrong
//! `replica.command` reads as what it is in `/_ringlb/status` and the log.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A program that exits within this time of its start, before it listens, failed to start (the
/// process and Docker runtimes wait this long at most, and less once it listens).
pub const EARLY_EXIT_WINDOW: Duration = Duration::from_secs(1);

/// How many of the last output lines a report keeps.
pub const TAIL_LINES: usize = 10;
/// The longest line a report keeps, in bytes; the rest is cut off.
const LINE_LIMIT: usize = 300;

/// A replica's program ended before it served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Exited {
    /// `exit code 1`, `killed by signal 9 (SIGKILL)`: as the runtime learnt it.
    pub status: String,
    /// Its last lines of output (stdout and stderr interleaved), oldest first.
    pub last_output: Vec<String>,
}

impl Exited {
    fn describe(&self) -> String {
        if self.last_output.is_empty() {
            format!("it exited at once ({}) without printing anything", self.status)
        } else {
            format!("it exited at once ({}); its last output: {}", self.status, self.last_output.join(" | "))
        }
    }
}

/// An exit status in words.
pub fn describe_status(code: Option<i64>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => "exit status unknown".to_owned(),
    }
}

/// The last lines a program printed, shared between the task that reads its output and the
/// one that reports its exit.
#[derive(Clone, Debug, Default)]
pub struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    /// Keeps `line` (cut to a sane length), forgetting the oldest beyond [`TAIL_LINES`].
    pub fn push(&self, line: &str) {
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        let mut cut = line.len().min(LINE_LIMIT);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line[..cut].to_owned());
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

impl fmt::Display for OutputTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_status_and_the_last_lines() {
        let tail = OutputTail::default();
        for i in 0..15 {
            tail.push(&format!("line {i}\n"));
        }
        tail.push("   ");
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 5");
        let exited =
            Exited { status: describe_status(Some(2), None), last_output: vec!["no such file".into()] };
        assert_eq!(exited.to_string(), "it exited at once (exit code 2); its last output: no such file");
        let silent = Exited { status: describe_status(None, Some(9)), last_output: vec![] };
        assert_eq!(
            silent.to_string(),
            "it exited at once (killed by signal 9 (SIGKILL)) without printing anything"
        );
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let tail = OutputTail::default();
        tail.push(&"é".repeat(400));
        assert!(tail.lines()[0].len() <= LINE_LIMIT);
    }
}
