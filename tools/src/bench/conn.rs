//! A blocking NSQ V2 connection for the bench tools: connect, magic, IDENTIFY, then large reads decoded in place.
//!
//! Blocking sockets on one thread per connection cost one `read` per wake-up
//! and nothing while idle; an async runtime would add an epoll round per
//! drained socket, which on a two-core box is CPU taken from nsqd.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::{
    Command, Frame, FrameDecoder, FrameType, IdentifyRequest, MessageId, HEARTBEAT, MAGIC_V2,
    MESSAGE_HEADER_LEN, OK,
};

use super::{BenchError, Result};
#[cfg(test)]
use nsq_protocol::frame::FrameError;

/// Bytes asked of the kernel per `read` by a consumer with the box to itself:
/// enough for over a thousand 200-byte message frames, so a busy consumer
/// wakes once per socket buffer, not per frame.
pub const READ_CHUNK: usize = 256 * 1024;

/// The smallest read chunk: what a publisher needs for its `OK`s, and the
/// floor for consumers sharing [`READ_CHUNK`]s' worth of memory among many
/// connections (a thousand connections must not cost a gigabyte of buffers).
pub const SMALL_READ: usize = 16 * 1024;

/// Largest frame accepted. nsqd's own limits keep frames near `--max-msg-size`
/// (1 MiB); this only stops a corrupt size from growing the buffer without end.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Where the message ID sits in a message frame's data: after the
/// timestamp and attempts, at the end of the header.
const ID_OFFSET: usize = MESSAGE_HEADER_LEN - 16;

/// No reply at all for this long, with publishes outstanding, means nsqd is
/// stuck; heartbeats alone arrive every 30 s by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(35);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A frame as the consumer's hot path sees it: message frames reduced to the
/// ID it has to FIN, everything else decoded in full.
#[derive(Debug)]
pub enum Incoming {
    Message(MessageId),
    Other(Frame),
}

pub struct Conn {
    stream: TcpStream,
    /// Bytes asked of the kernel per `read`.
    chunk: usize,
    /// Received bytes live in `buf[start..end]`. The buffer is zeroed once
    /// and reused, so a read costs no zeroing and no copy (std has no stable
    /// safe read into uninitialised memory); only a frame cut by the end of
    /// a read is moved, to the front.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in all, when it is incomplete.
    want: usize,
    decoder: FrameDecoder,
    /// Encoding space for one-off commands (RDY, NOP, SUB).
    cmd: BytesMut,
}

impl Conn {
    /// Connect, send the magic and IDENTIFY, and wait for nsqd's answer;
    /// reads ask for `chunk` bytes at a time (at least [`SMALL_READ`]).
    pub fn connect(addr: &str, tool: &str, chunk: usize) -> Result<Conn> {
        let chunk = chunk.max(SMALL_READ);
        let connect_err = |source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let resolved: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        let mut stream = None;
        for a in resolved {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        // Every command is written whole and waited on; Nagle would only add
        // delay to the small ones (RDY, NOP, PUB in the latency tool).
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            chunk,
            buf: vec![0u8; 2 * chunk],
            start: 0,
            end: 0,
            want: 0,
            decoder: FrameDecoder {
                max_frame: MAX_FRAME,
            },
            cmd: BytesMut::with_capacity(256),
        };
        let identify = IdentifyRequest {
            client_id: Some(tool.to_owned()),
            hostname: Some(nsq_app::os_hostname()),
            user_agent: Some(format!("{tool}/{}", nsq_app::VERSION)),
            feature_negotiation: Some(true),
            ..IdentifyRequest::default()
        };
        conn.cmd.extend_from_slice(MAGIC_V2);
        Command::Identify(Bytes::from(identify.to_json())).encode(&mut conn.cmd);
        conn.flush_cmd()?;
        // No TLS, snappy or deflate was asked for, so the JSON answer is all
        // there is to the negotiation.
        conn.expect_response("IDENTIFY")?;
        Ok(conn)
    }

    /// Send SUB and wait for its `OK`.
    pub fn subscribe(
        &mut self,
        topic: &nsq_protocol::TopicName,
        channel: &nsq_protocol::ChannelName,
    ) -> Result<()> {
        self.send(&Command::Sub {
            topic: topic.clone(),
            channel: channel.clone(),
        })?;
        self.expect_response("SUB")?;
        Ok(())
    }

    /// Encode and write one command.
    pub fn send(&mut self, cmd: &Command) -> Result<()> {
        cmd.encode(&mut self.cmd);
        self.flush_cmd()
    }

    fn flush_cmd(&mut self) -> Result<()> {
        let res = self.stream.write_all(&self.cmd);
        self.cmd.clear();
        Ok(res?)
    }

    /// Write prepared bytes (pre-encoded MPUBs, a batch of FINs).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.stream.write_all(bytes)?)
    }

    /// How long a read may wait; `None` blocks for good.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// One `read` appended to the undecoded bytes. `Ok(false)` when the read
    /// timeout passed with nothing to read.
    pub fn fill(&mut self) -> Result<bool> {
        self.make_room();
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(BenchError::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Leave at least a chunk free after `end`, and room for the whole of an
    /// incomplete frame, moving the unread tail to the front when that helps.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        if self.buf.len() - self.end >= self.chunk && self.start + self.want <= self.buf.len() {
            return;
        }
        // What moves is normally the head of one frame cut by the last read.
        self.buf.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = pending;
        let needed = self.want.max(pending) + self.chunk;
        if self.buf.len() < needed {
            // Only a frame larger than the buffer gets here; growing zeroes
            // just the new part, once.
            self.buf.resize(needed, 0);
        }
    }

    /// The length of the complete frame at `start`, `None` when more bytes
    /// are needed. A size no sane frame has is handed to [`FrameDecoder`],
    /// so its error names the problem exactly as everywhere else.
    fn whole_frame(&mut self) -> Result<Option<usize>> {
        let avail = &self.buf[self.start..self.end];
        let Some(head) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let size = i32::from_be_bytes(*head);
        if size < 4 || size as usize > MAX_FRAME {
            let err = self.decoder.decode(&mut BytesMut::from(avail)).err();
            return Err(err.map_or_else(
                || BenchError::Unexpected(format!("frame size {size}")),
                BenchError::Frame,
            ));
        }
        let total = 4 + size as usize;
        if avail.len() < total {
            self.want = total;
            return Ok(None);
        }
        self.want = 0;
        Ok(Some(total))
    }

    /// The next complete frame already read, if any; never touches the socket.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(total) = self.whole_frame()? else {
            return Ok(None);
        };
        // Control frames are rare and small: the decoder gets its own copy
        // and does all the checking.
        let mut one = BytesMut::from(&self.buf[self.start..self.start + total]);
        self.start += total;
        match self.decoder.decode(&mut one)? {
            Some(frame) => Ok(Some(frame)),
            None => Err(BenchError::Unexpected("frame decoder wanted more".into())),
        }
    }

    /// Like [`Conn::next_frame`], but a message frame yields only its ID,
    /// read in place: the consumer's per-message cost is a bounds check.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>> {
        let Some(total) = self.whole_frame()? else {
            return Ok(None);
        };
        let frame = &self.buf[self.start..self.start + total];
        let is_message = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]])
            == FrameType::Message as i32;
        if is_message && total >= 8 + MESSAGE_HEADER_LEN {
            let id = MessageId::from_slice(&frame[8 + ID_OFFSET..8 + MESSAGE_HEADER_LEN])
                .expect("a 16-byte slice");
            self.start += total;
            return Ok(Some(Incoming::Message(id)));
        }
        Ok(self.next_frame()?.map(Incoming::Other))
    }

    /// Block until a frame arrives. A read timeout counts as silence.
    pub fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            if !self.fill()? {
                return Err(BenchError::Silent(
                    self.stream.read_timeout()?.unwrap_or_default(),
                ));
            }
        }
    }

    /// Wait for the response to the command named `after`, answering
    /// heartbeats on the way; an error frame ends the run.
    pub fn expect_response(&mut self, after: &'static str) -> Result<Bytes> {
        loop {
            match self.read_frame()? {
                Frame::Response(data) if data == HEARTBEAT => self.send(&Command::Nop)?,
                Frame::Response(data) => return Ok(data),
                Frame::Error(text) => return Err(server_error(after, &text)),
                Frame::Message(m) => {
                    return Err(BenchError::Unexpected(format!(
                        "message {} while waiting for the reply to {after}",
                        m.id
                    )))
                }
            }
        }
    }
}

/// What a publishing connection makes of a frame: `true` for the `OK` to a
/// publish, `false` for a heartbeat (answered here); anything else ends the
/// run, since a publisher's count would no longer be true.
pub fn publish_reply(conn: &mut Conn, frame: Frame, after: &'static str) -> Result<bool> {
    match frame {
        Frame::Response(data) if data == OK => Ok(true),
        Frame::Response(data) if data == HEARTBEAT => {
            conn.send(&Command::Nop)?;
            Ok(false)
        }
        Frame::Response(data) => Err(BenchError::Unexpected(format!(
            "response {:?} to {after}",
            String::from_utf8_lossy(&data)
        ))),
        Frame::Error(text) => Err(server_error(after, &text)),
        Frame::Message(m) => Err(BenchError::Unexpected(format!(
            "message {} on a publishing connection",
            m.id
        ))),
    }
}

/// Open `n` connections to `addr` before any clock starts, as upstream's
/// tools do, each with `chunk`-byte reads and a read timeout.
pub fn connect_all(
    addr: &str,
    tool: &str,
    n: u32,
    chunk: usize,
    read_timeout: Duration,
) -> Result<Vec<Conn>> {
    (0..n)
        .map(|_| {
            let mut conn = Conn::connect(addr, tool, chunk)?;
            conn.set_read_timeout(Some(read_timeout))?;
            Ok(conn)
        })
        .collect()
}

/// The error for an error frame that arrived after `after`.
pub fn server_error(after: &'static str, text: &[u8]) -> BenchError {
    BenchError::Server {
        after,
        text: String::from_utf8_lossy(text).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use nsq_protocol::frame::{encode_message_frame, encode_response};

    use super::*;

    /// A fake nsqd that answers IDENTIFY, then sends `frames` in writes of
    /// `chunk` bytes, so frames are cut at every possible place.
    fn serve(frames: Vec<u8>, chunk: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 4 + 9 + 4];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head[..13], b"  V2IDENTIFY\n");
            let len = u32::from_be_bytes(head[13..17].try_into().unwrap());
            let mut json = vec![0u8; len as usize];
            s.read_exact(&mut json).unwrap();
            let mut reply = BytesMut::new();
            encode_response(&mut reply, b"{}");
            s.write_all(&reply).unwrap();
            for part in frames.chunks(chunk) {
                s.write_all(part).unwrap();
            }
            // Hold the socket until the client is done.
            let _ = s.read(&mut [0u8; 1]);
        });
        addr
    }

    #[test]
    fn frames_cut_anywhere_and_larger_than_the_buffer() {
        let mut wire = BytesMut::new();
        let mut want = Vec::new();
        for i in 0..5000u64 {
            // Every 1000th body is bigger than the whole read buffer.
            let len = if i % 1000 == 999 {
                3 * READ_CHUNK
            } else {
                (i % 300) as usize + 1
            };
            encode_message_frame(&mut wire, 1, 1, &MessageId::from_u64(i), &vec![7u8; len]);
            want.push(MessageId::from_u64(i));
        }
        encode_response(&mut wire, OK);
        for (read, chunk) in [(READ_CHUNK, 7), (READ_CHUNK, 4096), (SMALL_READ, 100_000)] {
            let addr = serve(wire.to_vec(), chunk);
            let mut conn = Conn::connect(&addr, "test", read).unwrap();
            let mut got = Vec::new();
            loop {
                match conn.next_incoming().unwrap() {
                    Some(Incoming::Message(id)) => got.push(id),
                    Some(Incoming::Other(Frame::Response(r))) => {
                        assert_eq!(&r[..], OK);
                        break;
                    }
                    Some(other) => panic!("{other:?}"),
                    None => assert!(conn.fill().unwrap()),
                }
            }
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let addr = serve(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), 64);
        let mut conn = Conn::connect(&addr, "test", READ_CHUNK).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(
            conn.read_frame(),
            Err(BenchError::Frame(FrameError::UnexpectedHttp))
        ));
        let addr = serve(b"\x00\x00\x00\x06\x00\x00\x00\x09xx".to_vec(), 64);
        let mut conn = Conn::connect(&addr, "test", READ_CHUNK).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(
            conn.read_frame(),
            Err(BenchError::Frame(FrameError::BadType(9)))
        ));
    }
}
