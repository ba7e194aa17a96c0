//! The guest's two byte streams as one channel of lines.
//!
//! In: the serial console (QEMU's end of it) and the agent's socket.
//! Out: a [`Receiver`] of [`Msg`]: each console or agent line as it is
//! written, cut to [`MAX_CONSOLE_LINE`] / [`MAX_AGENT_LINE`] bytes with a
//! marker saying how long it was, and one end-of-stream message per stream.
//! A reader thread per stream blocks on it, so a line arrives as soon as it
//! is written; a thread ends at its stream's end or when the receiver is
//! gone.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender};

/// One thing the guest's streams said.
pub enum Msg {
    Console(String),
    ConsoleEof,
    Agent(String),
    AgentEof,
}

/// The longest console line kept; the rest of the line is dropped.
pub const MAX_CONSOLE_LINE: usize = 16 * 1024;
/// The longest agent line read (an answer with its output).
pub const MAX_AGENT_LINE: usize = 1024 * 1024;

/// Starts the console's reader thread, then the agent's (on a clone of
/// `agent`, which stays the caller's to write to). The error is the
/// clone's.
pub fn spawn(
    console: impl Read + Send + 'static,
    agent: &UnixStream,
) -> std::io::Result<Receiver<Msg>> {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_lines(
        console,
        tx.clone(),
        MAX_CONSOLE_LINE,
        Msg::Console,
        Msg::ConsoleEof,
    );
    // A blocking line reader: answers arrive as soon as they are written
    // (rexpect's reader polls every 100 ms, which cost 0.1 s per step).
    let reader = agent.try_clone()?;
    spawn_lines(reader, tx, MAX_AGENT_LINE, Msg::Agent, Msg::AgentEof);
    Ok(rx)
}

/// Reads one line of at most `max` bytes into `buf` (without the newline)
/// and skips the rest of it. Ok(None) at the end of the stream; the bool
/// says whether the line was cut, the usize how long it was.
pub fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<(usize, bool)>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some((total, total > max)));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        total += part.len();
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some((total, total > max)));
        }
    }
}

/// A thread sending `r`'s lines (a trailing `\r` dropped, a cut line
/// marked) as `wrap(line)`, then `eof`.
fn spawn_lines<R: Read + Send + 'static>(
    r: R,
    tx: Sender<Msg>,
    max: usize,
    wrap: fn(String) -> Msg,
    eof: Msg,
) {
    std::thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(Some((len, cut))) = read_line_capped(&mut br, &mut buf, max) {
            let mut l = String::from_utf8_lossy(&buf)
                .trim_end_matches('\r')
                .to_string();
            if cut {
                l.push_str(&format!(" [coexist: line truncated, {len} bytes]"));
            }
            if tx.send(wrap(l)).is_err() {
                return;
            }
        }
        let _ = tx.send(eof);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_and_the_rest_of_a_long_line_is_skipped() {
        let long = "x".repeat(100);
        let input = format!("short\r\n{long}\nnext\nlast-without-newline");
        let mut r = std::io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some((len, cut)) = read_line_capped(&mut r, &mut buf, 10).unwrap() {
            got.push((String::from_utf8(buf.clone()).unwrap(), len, cut));
        }
        assert_eq!(
            got,
            vec![
                ("short\r".to_string(), 6, false),
                ("x".repeat(10), 100, true),
                ("next".to_string(), 4, false),
                ("last-witho".to_string(), 20, true),
            ]
        );
    }
}
