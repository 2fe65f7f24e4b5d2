//! A connection's commands for its refresher: a small bounded queue, sending waits while it
//! is full, and a send fails once the refresher is gone (shutting down).
//!
//! Why not `tokio::sync::mpsc`: its channel costs about 1 KiB before the first message
//! (cache-padded state and a first block of slots), and an app holds one per tenant,
//! thousands of them, almost all idle. This costs a mutex, two `Notify`s and, while
//! commands wait, their queue.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::Command;

/// Commands waiting at most; one more waits for room.
const CAPACITY: usize = 16;

#[derive(Default)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    ready: Notify,
    room: Notify,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Box<Command>>,
    closed: bool,
}

impl Mailbox {
    /// Queues `command` (waiting for room); false if the refresher is gone.
    pub async fn send(&self, command: Box<Command>) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so room made right after it is not missed.
            room.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return false;
                }
                if inner.queue.len() < CAPACITY {
                    inner.queue.push_back(command);
                    drop(inner);
                    self.ready.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }

    /// The next command (the refresher's side). Cancel-safe: a command is taken only by the
    /// poll that returns it.
    pub async fn recv(&self) -> Box<Command> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let next = self.lock().queue.pop_front();
            if let Some(command) = next {
                self.room.notify_one();
                return command;
            }
            ready.await;
        }
    }

    /// The refresher is gone: waiting and later sends fail, queued commands are dropped
    /// (their callers see their reply channel close).
    pub fn close(&self) {
        let dropped = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.queue)
        };
        drop(dropped);
        self.room.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Push, pop and a flag: a panic cannot leave the queue inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn command() -> (Box<Command>, oneshot::Receiver<()>) {
        let (done, answer) = oneshot::channel();
        (Box::new(Command::AuthorizingEnded { done }), answer)
    }

    #[tokio::test]
    async fn in_order_bounded_and_closed() {
        let mailbox = Arc::new(Mailbox::default());
        for _ in 0..CAPACITY {
            assert!(mailbox.send(command().0).await);
        }
        // Full: the next send waits until the refresher takes one.
        let waiting = {
            let mailbox = Arc::clone(&mailbox);
            tokio::spawn(async move { mailbox.send(command().0).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let _ = mailbox.recv().await;
        assert!(waiting.await.unwrap());
        // Closed: queued commands are dropped (their callers hear of it), sends fail.
        let (queued, answer) = command();
        let mailbox2 = Arc::new(Mailbox::default());
        assert!(mailbox2.send(queued).await);
        mailbox2.close();
        assert!(answer.await.is_err());
        assert!(!mailbox2.send(command().0).await);
    }

    #[tokio::test]
    async fn a_blocked_sender_learns_of_the_close() {
        let mailbox = Arc::new(Mailbox::default());
        for _ in 0..CAPACITY {
            assert!(mailbox.send(command().0).await);
        }
        let waiting = {
            let mailbox = Arc::clone(&mailbox);
            tokio::spawn(async move { mailbox.send(command().0).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.close();
        assert!(!waiting.await.unwrap());
    }
}
