//! Passes an upstream answer to the app: the rewritten head, then the body as it comes,
//! framed as the upstream framed it. A small answer (head and body in one upstream read)
//! goes out in one write.

use std::io;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::READ_CHUNK;
use super::chunked::Chunked;
use super::pool::Upstream;
use super::response::{Framing, Head};

/// How the relay ended.
pub struct Done {
    /// The upstream connection is at a message boundary with nothing extra read.
    pub reusable: bool,
}

/// Reads from the upstream until its buffer holds at least `end` bytes.
pub async fn fill(upstream: &mut Upstream, end: usize) -> io::Result<()> {
    while upstream.buf.len() < end {
        upstream.buf.reserve(end - upstream.buf.len());
        if upstream.stream.read_buf(&mut upstream.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Writes `app_head` and the body of the answer whose head starts `upstream.buf`.
pub async fn forward(
    upstream: &mut Upstream,
    app: &mut TcpStream,
    head: &Head,
    app_head: &mut Vec<u8>,
) -> io::Result<Done> {
    upstream.buf.advance(head.head_len);
    match head.framing {
        Framing::Empty => {
            app.write_all(app_head).await?;
            Ok(Done {
                reusable: upstream.buf.is_empty(),
            })
        }
        Framing::Length(length) => {
            let mut left = length;
            let mut first = Some(app_head);
            loop {
                let take = left.min(upstream.buf.len() as u64) as usize;
                write_with(app, first.take(), &upstream.buf[..take]).await?;
                upstream.buf.advance(take);
                left -= take as u64;
                if left == 0 {
                    return Ok(Done {
                        reusable: upstream.buf.is_empty(),
                    });
                }
                read_more(upstream).await?;
            }
        }
        Framing::Chunked => {
            let mut chunked = Chunked::default();
            let mut first = Some(app_head);
            loop {
                let end = chunked
                    .feed(&upstream.buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let take = end.unwrap_or(upstream.buf.len());
                write_with(app, first.take(), &upstream.buf[..take]).await?;
                upstream.buf.advance(take);
                if end.is_some() {
                    return Ok(Done {
                        reusable: upstream.buf.is_empty(),
                    });
                }
                read_more(upstream).await?;
            }
        }
        Framing::UntilClose => {
            let mut first = Some(app_head);
            loop {
                write_with(app, first.take(), &upstream.buf).await?;
                upstream.buf.clear();
                upstream.buf.reserve(READ_CHUNK);
                if upstream.stream.read_buf(&mut upstream.buf).await? == 0 {
                    return Ok(Done { reusable: false });
                }
            }
        }
    }
}

/// Replaces the (already passed) buffer contents with the next read.
async fn read_more(upstream: &mut Upstream) -> io::Result<()> {
    upstream.buf.clear();
    upstream.buf.reserve(READ_CHUNK);
    if upstream.stream.read_buf(&mut upstream.buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream closed the connection in the middle of the answer",
        ));
    }
    Ok(())
}

/// Writes `head` (if any) and `body`: one write when they are small together.
async fn write_with(
    app: &mut TcpStream,
    head: Option<&mut Vec<u8>>,
    body: &[u8],
) -> io::Result<()> {
    match head {
        None => app.write_all(body).await,
        Some(head) if head.len() + body.len() <= 2 * READ_CHUNK => {
            head.extend_from_slice(body);
            app.write_all(head).await
        }
        Some(head) => {
            app.write_all(head).await?;
            app.write_all(body).await
        }
    }
}
