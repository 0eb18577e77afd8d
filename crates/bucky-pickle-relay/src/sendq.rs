//! How much of what was written to a TCP socket the peer's TCP has not acknowledged yet.
//!
//! Linux's `SIOCOUTQ` ioctl (tcp(7); the same request as `TIOCOUTQ`) returns the bytes of the send
//! queue that the peer has not acknowledged: written but not sent yet, or sent and not acknowledged.
//! Everything written before that is in the relay's kernel. The writer subtracts it from what it wrote
//! on the connection to know which lines could still be lost with the connection. Where there is no
//! such ioctl the answer is "unknown", and the writer treats nothing as acknowledged.
//!
//! This is the crate's only unsafe code (the crate denies it everywhere else).
#![allow(unsafe_code)]

use std::os::fd::AsFd;

/// Bytes written to `sock` that its peer has not acknowledged, or `None` if the kernel cannot say.
#[cfg(target_os = "linux")]
pub(crate) fn unacknowledged(sock: &impl AsFd) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_fd();
    let mut queued: libc::c_int = 0;
    // SAFETY: `fd` is borrowed from `sock`, so it stays an open descriptor for the whole call, and
    // TIOCOUTQ (= SIOCOUTQ on a socket) writes exactly one `int` through its argument, which points at
    // `queued`, a live, properly aligned `c_int`. On a descriptor that is not a TCP socket the kernel
    // returns an error instead of writing.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    if r == 0 {
        u64::try_from(queued).ok()
    } else {
        None
    }
}

/// Bytes written to `sock` that its peer has not acknowledged: unknown on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn unacknowledged(_sock: &impl AsFd) -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn counts_what_the_peer_has_not_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut rx, _) = listener.accept().unwrap();
        assert_eq!(unacknowledged(&tx), Some(0));
        // The peer does not read: its window fills, and then what we write stays in our queue.
        tx.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tx.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline);
        }
        let queued = unacknowledged(&tx).unwrap();
        assert!(queued > 0 && queued <= written, "{queued} of {written}");
        // Once the peer has read everything, everything is acknowledged.
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        while read < written {
            read += rx.read(&mut buf).unwrap() as u64;
        }
        while unacknowledged(&tx) != Some(0) {
            assert!(Instant::now() < deadline, "still {:?} unacknowledged", unacknowledged(&tx));
            std::thread::sleep(Duration::from_millis(5));
        }
        // A descriptor that is not a socket: no answer rather than a wrong one.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(unacknowledged(&file), None);
    }
}
