//! Finds where a chunked message body ends (RFC 9112 section 7.1) without decoding it: the fast
//! path forwards chunked bodies byte for byte and only needs to know when the message is over and
//! that its framing is valid.

/// The longest chunk-size line (size, extensions) or trailer section accepted.
const MAX_LINE: usize = 4096;
/// The longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where in a chunked body the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size { digits: u8 },
    /// After the size: chunk extensions up to the line's CR.
    Extension,
    /// Expecting the LF that ends a size line.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// Invalid chunked framing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct Invalid(&'static str);

/// Scans a chunked body fed in pieces.
#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    /// The size of the current chunk; while in `Data`, what is left of it.
    size: u64,
    /// Bytes of the current size line or of the trailer section, to bound them.
    line: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner { state: State::Size { digits: 0 }, size: 0, line: 0 }
    }
}

impl ChunkedScanner {
    /// True once the last chunk and the trailer section have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next bytes of the body; returns how many of them belong to it (fewer than
    /// `bytes.len()` only when the body ended inside `bytes`).
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, Invalid> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let byte = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Size { digits } => match hex_value(byte) {
                    Some(value) => {
                        if digits >= 15 {
                            return Err(Invalid("chunk size too large"));
                        }
                        self.size = self.size << 4 | u64::from(value);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(Invalid("chunk size expected")),
                    None => match byte {
                        b'\r' => State::SizeLf,
                        b';' | b' ' | b'\t' => {
                            self.line = 0;
                            State::Extension
                        }
                        _ => return Err(Invalid("bad character in chunk size")),
                    },
                },
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(Invalid("chunk extension too long"));
                    }
                    match byte {
                        b'\r' => State::SizeLf,
                        b'\n' => return Err(Invalid("bare LF in chunk extension")),
                        _ => State::Extension,
                    }
                }
                State::SizeLf => match byte {
                    b'\n' if self.size == 0 => {
                        self.line = 0;
                        State::TrailerStart
                    }
                    b'\n' => State::Data,
                    _ => return Err(Invalid("CR without LF after chunk size")),
                },
                State::DataCr => match byte {
                    b'\r' => State::DataLf,
                    _ => return Err(Invalid("chunk data longer than its size")),
                },
                State::DataLf => match byte {
                    b'\n' => State::Size { digits: 0 },
                    _ => return Err(Invalid("CR without LF after chunk data")),
                },
                State::TrailerStart => match byte {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(Invalid("bare LF in trailers")),
                    _ => self.trailer_byte()?,
                },
                State::Trailer => match byte {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Invalid("bare LF in trailers")),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf => match byte {
                    b'\n' => State::TrailerStart,
                    _ => return Err(Invalid("CR without LF in trailers")),
                },
                State::EndLf => match byte {
                    b'\n' => State::Done,
                    _ => return Err(Invalid("CR without LF at the end of the body")),
                },
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn trailer_byte(&mut self) -> Result<State, Invalid> {
        self.line += 1;
        if self.line > MAX_TRAILERS {
            return Err(Invalid("trailers too long"));
        }
        Ok(State::Trailer)
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` one piece of `step` bytes at a time; returns the bytes that belong to it.
    fn scan(body: &[u8], step: usize) -> Result<Option<usize>, Invalid> {
        let mut scanner = ChunkedScanner::default();
        let mut total = 0;
        for piece in body.chunks(step) {
            let used = scanner.advance(piece)?;
            total += used;
            if scanner.is_done() {
                return Ok(Some(total));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(scan(body, step), Ok(Some(end)), "step {step}");
        }
    }

    #[test]
    fn an_incomplete_body_is_not_done() {
        assert_eq!(scan(b"5\r\nhel", 1), Ok(None));
        assert_eq!(scan(b"0\r\n", 1), Ok(None));
        assert_eq!(scan(b"0\r\n\r", 1), Ok(None));
    }

    #[test]
    fn bad_framing_is_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\rX",
            b"0\r\n\n",
            b"0\r\nx: 1\n\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
        ] {
            assert!(scan(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn large_chunks_are_counted_not_copied() {
        let mut scanner = ChunkedScanner::default();
        assert_eq!(scanner.advance(b"100000\r\n"), Ok(8));
        let data = vec![b'a'; 0x10_0000];
        assert_eq!(scanner.advance(&data), Ok(data.len()));
        assert_eq!(scanner.advance(b"\r\n0\r\n\r\nextra"), Ok(7));
        assert!(scanner.is_done());
    }
}
