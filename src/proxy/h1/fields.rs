//! Header-field helpers shared by the request and answer heads of the fast path. The rules
//! themselves (hop-by-hop, framing fields, lengths) live in [`crate::proxy::headers`].

use crate::proxy::headers::is_framing;

/// Names one head's `Connection` fields list, kept without allocating; more go to a `Vec`.
const INLINE_NAMED: usize = 8;

/// A `Connection` option names a field that frames or routes the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesFraming;

/// What a head's `Connection` fields say: `close`, and the fields to drop with them
/// (RFC 9110 section 7.6.1). Borrowed from the head's buffer.
#[derive(Default)]
pub struct ConnectionOptions<'a> {
    pub close: bool,
    named: [&'a [u8]; INLINE_NAMED],
    count: usize,
    /// Past [`INLINE_NAMED`]: rare, so the allocation is too.
    more: Vec<&'a [u8]>,
}

impl<'a> ConnectionOptions<'a> {
    /// Reads one `Connection` value. A framing field (`Content-Length`,
    /// `Transfer-Encoding`, `Host`) is never an option: the message is refused.
    pub fn add(&mut self, value: &'a [u8]) -> Result<(), NamesFraming> {
        for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if is_framing(option) {
                return Err(NamesFraming);
            } else if !option.is_empty() && !option.eq_ignore_ascii_case(b"keep-alive") {
                if self.count < INLINE_NAMED {
                    self.named[self.count] = option;
                    self.count += 1;
                } else {
                    self.more.push(option);
                }
            }
        }
        Ok(())
    }

    /// The field `name` is listed for removal.
    pub fn names(&self, name: &[u8]) -> bool {
        self.named[..self.count]
            .iter()
            .chain(&self.more)
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Appends `name: value` CRLF.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length: length` CRLF without formatting machinery.
pub fn write_length(out: &mut Vec<u8>, length: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    write_field(out, b"Content-Length", &digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_options() {
        let mut options = ConnectionOptions::default();
        assert_eq!(options.add(b" X-One ,keep-alive, Close"), Ok(()));
        assert!(options.close && options.names(b"x-one") && !options.names(b"keep-alive"));
        let mut options = ConnectionOptions::default();
        assert_eq!(options.add(b"a,b,c,d,e,f,g,h,i,j"), Ok(()));
        assert!(options.names(b"A") && options.names(b"j") && !options.names(b"k"));
        for framing in [&b"x, Content-Length"[..], b"transfer-encoding", b" HOST "] {
            let mut options = ConnectionOptions::default();
            assert_eq!(options.add(framing), Err(NamesFraming), "{framing:?}");
        }
    }

    #[test]
    fn lengths_are_written_as_digits() {
        for length in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            write_length(&mut out, length);
            assert_eq!(out, format!("Content-Length: {length}\r\n").into_bytes());
        }
    }
}
