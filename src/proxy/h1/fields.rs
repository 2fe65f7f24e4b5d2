//! Header-field helpers shared by the request and answer heads of the fast path.

/// How many names one head's `Connection` fields may list for removal.
const MAX_NAMED: usize = 8;

/// What a head's `Connection` fields say: `close`, and the fields to drop with them
/// (RFC 9110 section 7.6.1). Borrowed from the head's buffer.
#[derive(Default)]
pub struct ConnectionOptions<'a> {
    pub close: bool,
    named: [&'a [u8]; MAX_NAMED],
    count: usize,
}

impl<'a> ConnectionOptions<'a> {
    /// Reads one `Connection` value; false if it lists more names than are kept.
    pub fn add(&mut self, value: &'a [u8]) -> bool {
        for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !option.is_empty() && !option.eq_ignore_ascii_case(b"keep-alive") {
                if self.count == MAX_NAMED {
                    return false;
                }
                self.named[self.count] = option;
                self.count += 1;
            }
        }
        true
    }

    /// The field `name` is listed for removal.
    pub fn names(&self, name: &[u8]) -> bool {
        self.named[..self.count]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// `Proxy-*`: never forwarded, in either direction.
pub fn is_proxy_field(name: &[u8]) -> bool {
    name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
}

/// A Content-Length value: digits only.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Appends `name: value` CRLF.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_options() {
        let mut options = ConnectionOptions::default();
        assert!(options.add(b" X-One ,keep-alive, Close"));
        assert!(options.close && options.names(b"x-one") && !options.names(b"keep-alive"));
        let mut options = ConnectionOptions::default();
        assert!(!options.add(b"a,b,c,d,e,f,g,h,i"));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"+1"), None);
    }
}
