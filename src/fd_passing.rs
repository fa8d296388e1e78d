//! Passing descriptors over a Unix stream socket (`SCM_RIGHTS`): one `sendmsg` that attaches
//! descriptors to the first byte it writes, and a receiver that reads with `recvmsg` and keeps
//! what arrived, in order, until taken.
//!
//! It owns the system calls and the receiving side's bound, nothing else: which descriptors go
//! with which frame is `outbuf`'s and `channel`'s business, what they are is the caller's. It
//! never blocks (the sockets are non-blocking and every call says `MSG_DONTWAIT` as well) and
//! never raises SIGPIPE (`MSG_NOSIGNAL`).
//!
//! What the kernel guarantees, and the channel builds on: descriptors sent with a `sendmsg` on
//! a stream socket travel with the first byte of that call; a receiving `recvmsg` returns them
//! with the read that returns that byte, and that read stops at the end of the bytes the sender
//! wrote in that call (it never runs on into the next sender's call). A receiver that reads with
//! plain `read(2)` gets no descriptors: the kernel closes them.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Most descriptors one message may carry, either way. A received message with more is
/// truncated by the kernel (which closes the rest) and reported as an error.
pub const MAX_FDS_PER_MESSAGE: usize = 8;

/// Sends `bytes` (at least one) with `fds` attached to the first of them, in one `sendmsg`.
/// Returns how many bytes went; if any did, the descriptors went with them (the peer holds its
/// own copies; the caller's stay open). `WouldBlock` when the socket is full: nothing went.
pub fn send_with_fds<F: AsFd>(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[F],
) -> io::Result<usize> {
    if bytes.is_empty() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors with {} bytes: cannot be sent", fds.len(), bytes.len()),
        ));
    }
    let mut raw: [RawFd; MAX_FDS_PER_MESSAGE] = [-1; MAX_FDS_PER_MESSAGE];
    for (slot, fd) in raw.iter_mut().zip(fds) {
        *slot = fd.as_fd().as_raw_fd();
    }
    let iov = [IoSlice::new(bytes)];
    let control = [ControlMessage::ScmRights(&raw[..fds.len()])];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        match sendmsg::<()>(socket.as_raw_fd(), &iov, &control, flags, None) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// The control buffer's size in 8-byte words: one message of [`MAX_FDS_PER_MESSAGE`].
fn control_words() -> usize {
    let fds = (MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let bytes = unsafe { libc::CMSG_SPACE(fds) } as usize;
    bytes.div_ceil(std::mem::size_of::<u64>())
}

/// What one [`FdReceiver::receive`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read (0: the peer closed its end).
    pub bytes: usize,
    /// Descriptors that came with them (now kept by the receiver).
    pub fds: usize,
}

/// The receiving side: reads with `recvmsg` and keeps the descriptors that arrive.
#[derive(Debug)]
pub struct FdReceiver {
    /// Room for one message's control data (words: aligned for `cmsghdr`), allocated once.
    control: Vec<u64>,
    /// Received and not yet taken, oldest first.
    kept: VecDeque<OwnedFd>,
    /// Most descriptors kept untaken; one more is a protocol error.
    limit: usize,
}

impl FdReceiver {
    /// A receiver that keeps at most `limit` untaken descriptors.
    pub fn new(limit: usize) -> Self {
        FdReceiver { control: vec![0; control_words()], kept: VecDeque::new(), limit }
    }

    /// One `recvmsg` into `buf` (`MSG_CMSG_CLOEXEC`: a received descriptor never survives an
    /// `exec`). Descriptors that arrive are kept, in order, after the ones already kept.
    ///
    /// Errors: the socket's own, `WouldBlock` included; a truncated control message (more
    /// descriptors than [`MAX_FDS_PER_MESSAGE`] in one message, `MSG_CTRUNC`) and more than
    /// `limit` untaken descriptors are `InvalidData` (the peer broke the protocol); what
    /// arrived with such a read is closed.
    pub fn receive(&mut self, socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: an all-zero msghdr is a valid header with no address, data or control.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = self.control.as_mut_ptr().cast();
        header.msg_controllen = (self.control.len() * std::mem::size_of::<u64>()) as _;
        let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
        let bytes = loop {
            // SAFETY: `header` points at `iov`, which describes `buf` (borrowed mutably for
            // this call), and at the control buffer, valid for `msg_controllen` bytes; the
            // kernel writes only within those.
            let result = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
            if let Ok(bytes) = usize::try_from(result) {
                break bytes;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        let before = self.kept.len();
        // Descriptors are taken even from a truncated message (the kernel installed those that
        // fit, with a control header that says how many): they must be closed, not leaked.
        // SAFETY: after a successful recvmsg, `header.msg_control` holds `msg_controllen`
        // bytes of whole control messages written by the kernel (truncation drops whole
        // descriptors, never part of a header); CMSG_FIRSTHDR/NXTHDR stay within that length
        // and the descriptors are read unaligned from within each message's stated length.
        unsafe {
            let mut control = libc::CMSG_FIRSTHDR(&header);
            while !control.is_null() {
                if (*control).cmsg_level == libc::SOL_SOCKET
                    && (*control).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(control);
                    let header_len = data as usize - control as usize;
                    let count = ((*control).cmsg_len as usize).saturating_sub(header_len)
                        / std::mem::size_of::<RawFd>();
                    for index in 0..count {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(index));
                        // The kernel just installed `fd` in this process for this message;
                        // nothing else knows its number, so this is its only owner.
                        self.kept.push_back(OwnedFd::from_raw_fd(fd));
                    }
                }
                control = libc::CMSG_NXTHDR(&header, control);
            }
        }
        let arrived = self.kept.len() - before;
        if header.msg_flags & libc::MSG_CTRUNC != 0 {
            self.kept.truncate(before);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer attached more descriptors than a message may carry",
            ));
        }
        if self.kept.len() > self.limit {
            self.kept.truncate(before);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer sent {arrived} more descriptors with {before} untaken (limit {})",
                    self.limit
                ),
            ));
        }
        Ok(Received { bytes, fds: arrived })
    }

    /// The oldest received descriptor not yet taken.
    pub fn take(&mut self) -> Option<OwnedFd> {
        self.kept.pop_front()
    }

    /// How many received descriptors wait to be taken.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// Passes `fd` through a real socket pair and returns the received copy: what a session
    /// holds after the broker handed it something.
    pub(crate) fn passed_through_a_socket(fd: BorrowedFd<'_>) -> OwnedFd {
        let (sender, receiver) = UnixStream::pair().expect("pair");
        assert_eq!(send_with_fds(sender.as_fd(), b"x", &[fd]).expect("sendmsg"), 1);
        let mut fds = FdReceiver::new(4);
        let mut buf = [0u8; 4];
        let got = fds.receive(receiver.as_fd(), &mut buf).expect("recvmsg");
        assert_eq!(got, Received { bytes: 1, fds: 1 });
        fds.take().expect("a descriptor")
    }

    #[test]
    fn a_passed_pipe_end_reads_what_the_writer_wrote() {
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let received = passed_through_a_socket(read_end.as_fd());
        drop(read_end);
        let mut writer = std::fs::File::from(write_end);
        writer.write_all(b"through").expect("write");
        let mut reader = std::fs::File::from(received);
        let mut got = [0u8; 7];
        reader.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"through");
    }

    #[test]
    fn too_many_untaken_descriptors_are_an_error_and_are_closed() {
        let (sender, receiver) = UnixStream::pair().expect("pair");
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let mut fds = FdReceiver::new(2);
        let mut buf = [0u8; 4];
        send_with_fds(sender.as_fd(), b"a", &[read_end.as_fd(), read_end.as_fd()]).expect("send");
        send_with_fds(sender.as_fd(), b"b", &[read_end.as_fd()]).expect("send");
        drop(read_end);
        assert_eq!(fds.receive(receiver.as_fd(), &mut buf).expect("first").fds, 2);
        let err = fds.receive(receiver.as_fd(), &mut buf).expect_err("one too many");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(fds.kept(), 2);
        drop(fds);
        // Every copy of the read end is closed: the writer sees a broken pipe.
        let err = nix::unistd::write(&write_end, b"z").expect_err("no reader left");
        assert_eq!(err, Errno::EPIPE);
    }

    #[test]
    fn a_message_with_more_descriptors_than_room_is_an_error() {
        let (sender, receiver) = UnixStream::pair().expect("pair");
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        // Past what send_with_fds allows: the raw call, as a hostile peer would make it.
        let raw = [read_end.as_raw_fd(); MAX_FDS_PER_MESSAGE + 1];
        let control = [ControlMessage::ScmRights(&raw)];
        sendmsg::<()>(sender.as_raw_fd(), &[IoSlice::new(b"x")], &control, MsgFlags::empty(), None)
            .expect("sendmsg");
        drop(read_end);
        let mut fds = FdReceiver::new(64);
        let err = fds.receive(receiver.as_fd(), &mut [0u8; 4]).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(fds.kept(), 0);
        assert_eq!(nix::unistd::write(&write_end, b"z").expect_err("closed"), Errno::EPIPE);
    }
}
