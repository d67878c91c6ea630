//! Many non-blocking sends, to different sockets, in one system call.
//!
//! An event for a room goes to each of its members' sockets: written one by
//! one, that is one `sendto` per delivery, each entering and leaving the
//! kernel (issue 19 asks for at most 1.2 system calls per delivery; the
//! sends alone were 1.05). Through an io_uring the fan-out queues one send
//! per socket and enters the kernel once for all of them. Each send is
//! `MSG_DONTWAIT`: the kernel tries it at once and answers `EAGAIN` instead
//! of waiting for room, so every answer is there when the call returns and
//! the caller goes on exactly as after a `sendto` (queueing what a socket
//! did not take).
//!
//! A ring is opened per thread on its first batch, and only if the kernel
//! allows io_uring (container runtimes' default seccomp profiles refuse
//! it) and keeps that promise: opening sends to a full socket and must get
//! `EAGAIN` back at once. Otherwise, or with `SIDECAR_IO_URING=false`, each
//! send is a `sendto` of its own, as before.
//!
//! The only `unsafe` in the sidecar is here: a queued send names its bytes
//! by address, so the compiler cannot see that they outlive it. They do
//! because a batch returns only after every send has answered.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// Sends in one submission: the fan-out writes at most this many sockets
/// itself (`DIRECT_FANOUT_MAX`); a larger batch goes in several.
const RING_ENTRIES: u32 = 64;

/// Whether sends may be batched (`SIDECAR_IO_URING`); read on each batch.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns batching through io_uring on or off for the process (the setting
/// `SIDECAR_IO_URING`; off, each send is its own `sendto`).
pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// What each thread knows of its ring.
enum Ring {
    /// Not opened yet.
    Unopened,
    /// Opened and checked (boxed: the ring's handles are ~270 bytes).
    Open(Box<IoUring>),
    /// The kernel refused io_uring, or did not keep `MSG_DONTWAIT`.
    Unavailable,
}

thread_local! {
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Unopened) };
}

/// Sends `bytes` to each socket without waiting, and gives each send's
/// result (bytes taken, `WouldBlock`, or the socket's error) to `done`, in
/// the order of `sends`. With no ring, or fewer than two sends, each is a
/// `send` of its own through `fallback`.
pub(crate) fn send_each<T>(
    sends: &mut [T],
    socket: impl Fn(&T) -> (RawFd, &[u8]),
    mut fallback: impl FnMut(&mut T) -> io::Result<usize>,
    mut done: impl FnMut(&mut T, io::Result<usize>),
) {
    let batched = sends.len() >= 2
        && ENABLED.load(Ordering::Relaxed)
        && RING.with_borrow_mut(|ring| {
            let Some(uring) = ring.open() else { return false };
            let mut failed = false;
            for chunk in sends.chunks_mut(RING_ENTRIES as usize) {
                if failed {
                    // Never queued in the kernel: safe to send one by one.
                    one_by_one(chunk, &mut fallback, &mut done);
                } else {
                    failed = submit(uring, chunk, &socket, &mut done).is_err();
                }
            }
            if failed {
                ring.break_down();
            }
            true
        });
    if !batched {
        one_by_one(sends, &mut fallback, &mut done);
    }
}

/// Each send a system call of its own.
fn one_by_one<T>(
    sends: &mut [T],
    fallback: &mut impl FnMut(&mut T) -> io::Result<usize>,
    done: &mut impl FnMut(&mut T, io::Result<usize>),
) {
    for send in sends.iter_mut() {
        let result = fallback(send);
        done(send, result);
    }
}

impl Ring {
    /// The thread's ring, opened on first use.
    fn open(&mut self) -> Option<&mut IoUring> {
        if let Ring::Unopened = self {
            *self = match open_checked() {
                Ok(uring) => Ring::Open(Box::new(uring)),
                Err(e) => {
                    tracing::info!(error = %e, "io_uring unavailable: each delivery is a send() of its own");
                    Ring::Unavailable
                }
            };
        }
        match self {
            Ring::Open(uring) => Some(uring),
            _ => None,
        }
    }

    /// Gives the ring up after the kernel failed a submission: later
    /// batches send one by one. The ring is not closed, because closing
    /// cancels what it still holds in the background, and a send of ours
    /// it held would then read bytes already freed.
    fn break_down(&mut self) {
        if let Ring::Open(uring) = std::mem::replace(self, Ring::Unavailable) {
            tracing::warn!("io_uring failed: each delivery is a send() of its own from now on");
            std::mem::forget(uring);
        }
    }
}

/// Queues one send per entry of `chunk`, enters the kernel once, and hands
/// every answer on. Each send names the bytes it reads by address: they
/// are borrowed from `chunk`, which outlives the call, and the call returns
/// only once every send has answered. If the kernel fails the submission
/// itself, a send whose fate is unknown is reported failed (its connection
/// ends; a stateful session resends it after resuming), never sent again:
/// it may have gone.
fn submit<T>(
    uring: &mut IoUring,
    chunk: &mut [T],
    socket: &impl Fn(&T) -> (RawFd, &[u8]),
    done: &mut impl FnMut(&mut T, io::Result<usize>),
) -> io::Result<()> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    {
        let mut queue = uring.submission();
        for (i, send) in chunk.iter().enumerate() {
            let (fd, bytes) = socket(send);
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let entry = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len).flags(flags).build().user_data(i as u64);
            // SAFETY: the entry reads `len` bytes at `bytes`, which `chunk`
            // keeps alive and unmoved until every entry has completed below.
            // The queue has room: it holds RING_ENTRIES and chunks are no longer.
            if unsafe { queue.push(&entry) }.is_err() {
                unreachable!("a chunk fits the submission queue");
            }
        }
    }
    let mut results: [Option<io::Result<usize>>; RING_ENTRIES as usize] = [const { None }; RING_ENTRIES as usize];
    let mut answered = 0;
    let mut failure = None;
    while answered < chunk.len() {
        match uring.submit_and_wait(chunk.len() - answered) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "io_uring submission failed");
                failure = Some(e);
            }
        }
        // After a failure too: whatever answered meanwhile still counts.
        answered += take_answers(uring, &mut results);
        if failure.is_some() {
            break;
        }
    }
    for (send, result) in chunk.iter_mut().zip(results.iter_mut()) {
        done(send, result.take().unwrap_or_else(|| Err(io::Error::other("io_uring failed"))));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Moves the completions waiting in the ring into `results`, by the index
/// each send was queued with; returns how many it moved.
fn take_answers(uring: &mut IoUring, results: &mut [Option<io::Result<usize>>]) -> usize {
    let mut taken = 0;
    for cqe in uring.completion() {
        if let Some(slot) = results.get_mut(cqe.user_data() as usize).filter(|slot| slot.is_none()) {
            *slot = Some(answer(cqe.result()));
            taken += 1;
        }
    }
    taken
}

/// A completion's result as `send` would have returned it.
fn answer(result: i32) -> io::Result<usize> {
    if result >= 0 {
        Ok(result as usize)
    } else {
        Err(io::Error::from_raw_os_error(-result))
    }
}

/// Opens a ring and checks the one promise batching relies on: a send to a
/// socket with no room answers `EAGAIN` at once, instead of waiting in the
/// kernel (where it would hold the bytes and the fan-out). Kernels before
/// that promise, or a seccomp filter that refuses io_uring, fail here.
fn open_checked() -> io::Result<IoUring> {
    let mut uring = IoUring::new(RING_ENTRIES)?;
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    let chunk = vec![0u8; 64 * 1024];
    // Fill the socket's buffer.
    while tx.write(&chunk).is_ok() {}
    let entry = opcode::Send::new(types::Fd(tx.as_raw_fd()), chunk.as_ptr(), chunk.len() as u32)
        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        .build()
        .user_data(0);
    // SAFETY: `chunk` outlives the send: the function waits for its
    // completion, or cancels it and waits for that, before returning.
    unsafe { uring.submission().push(&entry) }.map_err(|_| io::Error::other("submission queue full"))?;
    let wait = types::Timespec::from(Duration::from_millis(200));
    let args = types::SubmitArgs::new().timespec(&wait);
    let answered = match uring.submitter().submit_with_args(1, &args) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => false,
        Err(e) => return Err(e),
    };
    let result = uring.completion().next().map(|cqe| cqe.result());
    match result {
        Some(r) if answered && r == -libc::EAGAIN => Ok(uring),
        Some(r) => Err(io::Error::other(format!("a send to a full socket answered {r}, not EAGAIN"))),
        None => {
            // The send waits for room: this kernel ignores MSG_DONTWAIT
            // here. Closing the ring cancels it in the background; the
            // peer end is closed first so the send fails if it runs.
            // The bytes are leaked, not freed, for the same reason.
            drop(rx);
            drop(tx);
            drop(uring);
            std::mem::forget(chunk);
            Err(io::Error::other("a send to a full socket waited instead of answering EAGAIN"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn run(sends: &mut [(UnixStream, Vec<u8>)]) -> Vec<io::Result<usize>> {
        let mut results = Vec::new();
        send_each(sends, |(s, b)| (s.as_raw_fd(), b.as_slice()), |(s, b)| s.write(b), |_, r| results.push(r));
        results
    }

    #[test]
    fn this_kernel_batches_sends() {
        // Where io_uring is refused the fallback is what runs (and what the
        // other tests then check); here, on the machine the figures come
        // from, the ring must open.
        if std::env::var_os("SIDECAR_TEST_NEEDS_IO_URING").is_some() {
            open_checked().expect("io_uring opens and keeps MSG_DONTWAIT");
        }
    }

    #[test]
    fn every_socket_gets_its_bytes_and_a_full_one_answers_would_block() {
        let pairs: Vec<(UnixStream, UnixStream)> = (0..3).map(|_| UnixStream::pair().expect("pair")).collect();
        let (senders, mut receivers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        for s in &senders {
            s.set_nonblocking(true).expect("nonblocking");
        }
        // The last socket has no room left.
        let filler = vec![1u8; 64 * 1024];
        while (&senders[2]).write(&filler).is_ok() {}
        let mut sends: Vec<(UnixStream, Vec<u8>)> =
            senders.into_iter().enumerate().map(|(i, s)| (s, format!("frame {i}").into_bytes())).collect();
        let results = run(&mut sends);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().ok(), Some(&7));
        assert_eq!(results[1].as_ref().ok(), Some(&7));
        assert_eq!(results[2].as_ref().map_err(io::Error::kind).err(), Some(io::ErrorKind::WouldBlock));
        for (i, r) in receivers.iter_mut().take(2).enumerate() {
            let mut got = [0u8; 7];
            r.read_exact(&mut got).expect("reads");
            assert_eq!(got, format!("frame {i}").as_bytes());
        }
    }

    #[test]
    fn more_sends_than_the_ring_holds_all_go() {
        let n = RING_ENTRIES as usize * 2 + 3;
        let pairs: Vec<(UnixStream, UnixStream)> = (0..n).map(|_| UnixStream::pair().expect("pair")).collect();
        let (senders, mut receivers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        senders.iter().for_each(|s| s.set_nonblocking(true).expect("nonblocking"));
        let mut sends: Vec<(UnixStream, Vec<u8>)> = senders.into_iter().map(|s| (s, b"x".to_vec())).collect();
        let results = run(&mut sends);
        assert!(results.iter().all(|r| r.as_ref().ok() == Some(&1)), "{results:?}");
        for r in &mut receivers {
            let mut got = [0u8; 1];
            r.read_exact(&mut got).expect("reads");
        }
    }

    #[test]
    fn a_closed_peer_is_an_error_for_its_send_only() {
        let (a, a_peer) = UnixStream::pair().expect("pair");
        let (b, mut b_peer) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        drop(a_peer);
        let mut sends = vec![(a, b"one".to_vec()), (b, b"two".to_vec())];
        let results = run(&mut sends);
        assert!(results[0].is_err(), "a send to a closed peer fails (EPIPE, no SIGPIPE)");
        assert_eq!(results[1].as_ref().ok(), Some(&3));
        let mut got = [0u8; 3];
        b_peer.read_exact(&mut got).expect("reads");
        assert_eq!(&got, b"two");
    }
}
