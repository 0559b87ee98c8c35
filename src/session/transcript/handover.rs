//! The handover of one pane's pipe to the session's transcript writer: a `SOCK_SEQPACKET`
//! message (so one send is one message) carrying the pipe as `SCM_RIGHTS` and, as bytes,
//! the transcript file and the redaction patterns. The writer answers with one message:
//! [`ACK`] once it owns the pipe, else the reason it refused.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    sockopt,
};

/// First field of every request; a writer from another orch version refuses what it
/// cannot read instead of misreading it.
const MAGIC: &[u8] = b"orch-transcript-1";
/// Requests are small (a path and a few patterns); a bigger one is refused, not cut.
pub const MAX_REQUEST: usize = 64 * 1024;
pub const ACK: &[u8] = b"ok";

/// What a pipe child asks of the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub file: PathBuf,
    pub redact: Vec<String>,
}

impl Request {
    /// Fields separated by NUL, which neither a path nor a command-line argument can hold.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(0);
        out.extend_from_slice(self.file.as_os_str().as_bytes());
        for p in &self.redact {
            out.push(0);
            out.extend_from_slice(p.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        let mut fields = bytes.split(|&b| b == 0);
        if fields.next() != Some(MAGIC) {
            return Err("not a transcript handover from this version of orch".into());
        }
        let file = fields.next().filter(|f| !f.is_empty()).ok_or("no file")?;
        let redact = fields
            .map(|p| String::from_utf8(p.to_vec()).map_err(|_| "a pattern is not UTF-8"))
            .collect::<Result<_, _>>()?;
        Ok(Request {
            file: PathBuf::from(OsStr::from_bytes(file)),
            redact,
        })
    }
}

/// How a handover attempt ended, when it did not succeed.
#[derive(Debug)]
pub enum Failed {
    /// Nobody listens on the socket (no file, or a file left by a writer that died).
    NoWriter,
    /// The writer went away before it answered (it was exiting): try again.
    Lost,
    /// The writer answered, and refused.
    Refused(String),
}

/// Sends `pipe` with `request` to the writer listening at `socket` and waits for its answer.
pub fn send(socket: &Path, pipe: BorrowedFd<'_>, request: &Request) -> Result<(), Failed> {
    let conn = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Failed::Refused(format!("creating a socket: {e}")))?;
    let addr = SocketAddrUnix::new(socket).map_err(|e| Failed::Refused(e.to_string()))?;
    if rustix::net::connect(&conn, &addr).is_err() {
        return Err(Failed::NoWriter);
    }
    let body = request.encode();
    let fds = [pipe];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    if rustix::net::sendmsg(
        &conn,
        &[IoSlice::new(&body)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .is_err()
    {
        return Err(Failed::Lost);
    }
    // A writer answers at once; one that does not is stuck, and a transcript is not worth
    // holding the pane's pipe child for longer.
    let _ = sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(ANSWER_WITHIN));
    let mut answer = [0u8; 1024];
    match rustix::net::recv(&conn, &mut answer, RecvFlags::empty()) {
        Ok((n, _)) if n > 0 && &answer[..n] == ACK => Ok(()),
        Ok((n, _)) if n > 0 => Err(Failed::Refused(
            String::from_utf8_lossy(&answer[..n]).into_owned(),
        )),
        _ => Err(Failed::Lost),
    }
}

const ANSWER_WITHIN: Duration = Duration::from_secs(5);
const REQUEST_WITHIN: Duration = Duration::from_secs(1);

/// Reads one request and its pipe from a connection just accepted.
pub fn receive(conn: BorrowedFd<'_>) -> Result<(Request, OwnedFd), String> {
    // The asker sends as soon as it is connected; one that does not must not stall every
    // other pane's output for long.
    let _ = sockopt::set_socket_timeout(conn, sockopt::Timeout::Recv, Some(REQUEST_WITHIN));
    let mut body = vec![0u8; MAX_REQUEST];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut body)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("reading the handover: {e}"))?;
    let mut pipe = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            // Any fd beyond the first is closed as the iterator drops it.
            for fd in fds {
                pipe.get_or_insert(fd);
            }
        }
    }
    if got
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    {
        return Err(format!("handover larger than {MAX_REQUEST} bytes"));
    }
    let request = Request::decode(&body[..got.bytes])?;
    let pipe = pipe.ok_or("the handover carried no pipe")?;
    Ok((request, pipe))
}

/// Answers a request on its connection.
pub fn answer(conn: impl AsFd, text: &[u8]) {
    // The asker may have given up; nothing to do about that.
    let _ = rustix::net::send(conn, text, SendFlags::NOSIGNAL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_strangers_are_refused() {
        let r = Request {
            file: PathBuf::from("/st/s/transcripts/a b.log"),
            redact: vec!["tok-[0-9]+".into(), String::new(), "x|y".into()],
        };
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        let none = Request {
            file: PathBuf::from("/a.log"),
            redact: Vec::new(),
        };
        assert_eq!(Request::decode(&none.encode()), Ok(none));
        assert!(Request::decode(b"orch-transcript-9\0/a.log").is_err());
        assert!(Request::decode(b"orch-transcript-1\0").is_err());
        assert!(Request::decode(b"orch-transcript-1\0/a\0\xff").is_err());
    }

    #[test]
    fn a_pipe_and_its_request_cross_the_socket() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.sock");
        let listener =
            rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
        rustix::net::bind(&listener, &SocketAddrUnix::new(&path).expect("addr")).expect("bind");
        rustix::net::listen(&listener, 4).expect("listen");
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().expect("pair");
        let request = Request {
            file: PathBuf::from("/t/a.log"),
            redact: vec!["p".into()],
        };
        let server = std::thread::spawn(move || {
            let conn = rustix::net::accept(&listener).expect("accept");
            let (got, pipe) = receive(conn.as_fd()).expect("receive");
            answer(&conn, ACK);
            (got, pipe)
        });
        send(&path, reader.as_fd(), &request).expect("handed over");
        let (got, pipe) = server.join().expect("server");
        assert_eq!(got, request);
        // The writer's copy reads what the other end writes, even with ours closed.
        writer.write_all(b"hello").expect("write");
        drop(writer);
        let mut text = String::new();
        std::fs::File::from(pipe)
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "hello");
        assert!(matches!(
            send(&dir.path().join("none.sock"), reader.as_fd(), &request),
            Err(Failed::NoWriter)
        ));
    }
}
