//! Finds where a chunked message body ends (RFC 9112 section 7.1) without decoding it: the
//! fast path passes chunked upstream answers to the app byte for byte and only needs to know
//! when the message is over, so the upstream connection can be reused.
//!
//! Strict, because the app parses the same bytes after us: a size line is hex digits, then
//! optionally whitespace and a `;` extension, then CRLF (no whitespace before the CRLF, no
//! bare LF); every trailer line ends in CRLF. Whatever a lenient parser might read another
//! way is an error, and the relay cuts the app's connection instead of passing it on.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size: only a `;` may follow (RFC 9112 `BWS ";"`).
    SizeSpace,
    /// A chunk extension, up to CR.
    Extension,
    /// LF ending the size line.
    SizeLf,
    /// Chunk data still to pass.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The final LF.
    EndLf,
    Done,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

/// Tracks a chunked body fed in pieces.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    /// Feeds the next bytes of the body. `Some(n)`: the message ends after `bytes[..n]`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // At most 16 hex digits: a u64.
                        if self.digits == 16 {
                            return Err(ChunkError);
                        }
                        self.digits += 1;
                        let digit = (b as char).to_digit(16).ok_or(ChunkError)?;
                        self.size = self.size << 4 | u64::from(digit);
                        State::Size
                    }
                    _ if self.digits == 0 => return Err(ChunkError),
                    b'\r' => State::SizeLf,
                    b';' => State::Extension,
                    b' ' | b'\t' => State::SizeSpace,
                    _ => return Err(ChunkError),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    _ => return Err(ChunkError),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError),
                    _ => State::Extension,
                },
                State::SizeLf if b == b'\n' => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    }
                }
                State::Data(left) => {
                    // Skip the data in one step.
                    let available = (bytes.len() - i) as u64;
                    let take = left.min(available);
                    i += take as usize;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size,
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkError),
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError),
                    _ => State::Trailer,
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::Done => return Ok(Some(i)),
                State::SizeLf | State::DataCr | State::DataLf | State::TrailerLf | State::EndLf => {
                    return Err(ChunkError);
                }
            };
            i += 1;
        }
        Ok((self.state == State::Done).then_some(bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8], piece: usize) -> Result<Option<usize>, ChunkError> {
        let mut chunked = Chunked::default();
        let mut offset = 0;
        for part in body.chunks(piece) {
            if let Some(n) = chunked.feed(part)? {
                return Ok(Some(offset + n));
            }
            offset += part.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body =
            b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..body.len() {
            assert_eq!(end_of(body, piece), Ok(Some(end)), "piece {piece}");
        }
    }

    #[test]
    fn incomplete_and_malformed() {
        assert_eq!(end_of(b"5\r\nhel", 100), Ok(None));
        assert_eq!(end_of(b"0\r\n\r", 100), Ok(None));
        assert_eq!(end_of(b"0 \t;x=1\r\n\r\n", 100), Ok(Some(11)));
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"11111111111111111\r\n",
            // Whitespace before the CRLF of a size line.
            b"0 \r\n\r\n",
            b"5\t\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            // A bare LF ending an extension or a trailer line.
            b"5;a\nhello\r\n",
            b"0\r\nx-t: 1\n\r\n",
            b"0\r\nx-t: 1\r\n\n",
            b"0\r\nx-t: 1\rx\r\n\r\n",
        ] {
            assert_eq!(end_of(bad, 100), Err(ChunkError), "{bad:?}");
        }
    }
}
