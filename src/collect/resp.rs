//! The proxy's RESP listener (the `redis` crate, synchronous): `AUTH <key>` first, then
//! `LPOP usage <count>` to drain what was queued, or `SUBSCRIBE usage` for what is published
//! while subscribed.
//!
//! How CLIProxyAPI answers (internal/api/redis_queue_protocol.go, checked against its
//! source): any command before `AUTH` counts as a failed login towards a 30-minute IP ban,
//! so `AUTH` is the first and only handshake command (no `CLIENT SETINFO`); `LPOP` and
//! `RPOP` both pop the oldest records, and only from the key `usage` (later versions refuse
//! any other key); a subscribed connection accepts nothing but `PING`, `UNSUBSCRIBE` and
//! `QUIT`, so popping needs a second connection; a subscriber that falls 256 records behind
//! is dropped by the proxy, so the subscription is read continuously.

use super::{Key, QueueError};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::time::Duration;

/// The key (and channel) CLIProxyAPI serves its usage queue under.
pub const QUEUE: &str = "usage";

/// How long connecting may take before the proxy counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reply to `AUTH` may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Resp {
    host: String,
    port: u16,
    key: Key,
}

impl Resp {
    pub fn new(host: &str, port: u16, key: Key) -> Resp {
        Resp { host: host.to_string(), port, key }
    }

    /// A connection that has passed `AUTH`.
    pub fn connect(&self) -> Result<redis::Connection, QueueError> {
        let info = ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()
            .map_err(|e| QueueError::Unreachable(e.to_string()))?
            // CLIENT SETINFO before AUTH would count as failed logins on the proxy.
            .set_redis_settings(RedisConnectionInfo::default().set_skip_set_lib_name());
        let client = redis::Client::open(info).map_err(|e| QueueError::Unreachable(e.to_string()))?;
        let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(unreachable)?;
        con.set_read_timeout(Some(AUTH_TIMEOUT)).map_err(unreachable)?;
        con.set_write_timeout(Some(AUTH_TIMEOUT)).map_err(unreachable)?;
        match redis::cmd("AUTH").arg(self.key.expose()).query::<redis::Value>(&mut con) {
            Ok(_) => {
                // From here on, reads wait as long as the reply takes: a socket read with a
                // timeout is not restarted after a signal (SIGTERM would abandon an `LPOP`
                // reply, and with it the records the proxy had popped), and the proxy
                // answers a pop at once. The subscription sets its own short timeout.
                con.set_read_timeout(None).map_err(lost)?;
                con.set_write_timeout(None).map_err(lost)?;
                Ok(con)
            }
            // Any refusal (a wrong key, remote management disabled, an IP ban) is final:
            // retrying a wrong key would only earn the ban.
            Err(e) if e.code().is_some() => Err(QueueError::Auth(server_message(&e))),
            Err(e) => Err(lost(e)),
        }
    }

    /// Pops up to `count` of the oldest queued records (destructive), with the error that
    /// ended the reading of the reply, if one did: the records before it are off the proxy,
    /// and the caller writes them first.
    pub fn pop(con: &mut redis::Connection, count: usize) -> Result<(Vec<Vec<u8>>, Option<QueueError>), QueueError> {
        let reply: redis::Value = redis::cmd("LPOP").arg(QUEUE).arg(count).query(con).map_err(|e| match e.code() {
            Some(_) => QueueError::Protocol(format!("LPOP {QUEUE} {count}: {}", server_message(&e))),
            None => lost(e),
        })?;
        // Every string in the reply is taken as a record, whatever shape the reply has (a
        // bulk string alone, a simple string, a nested array). A record is never put in a
        // message: it can hold keys.
        let mut records = Vec::new();
        let error = strings_of(reply, &mut records).err().map(|kind| {
            QueueError::Protocol(format!(
                "LPOP {QUEUE} {count}: the reply holds {kind}, not records; is this CLIProxyAPI's usage queue?"
            ))
        });
        Ok((records, error))
    }
}

/// The strings of a reply, in order, all of them; the kind of the first value that is not
/// one.
fn strings_of(v: redis::Value, out: &mut Vec<Vec<u8>>) -> Result<(), &'static str> {
    use redis::Value as V;
    match v {
        V::Nil => Ok(()),
        V::BulkString(b) => {
            out.push(b);
            Ok(())
        }
        V::SimpleString(s) => {
            out.push(s.into_bytes());
            Ok(())
        }
        V::Array(items) | V::Set(items) => {
            // Past a bad value too: the strings after it are records as well.
            let mut first = Ok(());
            for i in items {
                first = first.and(strings_of(i, out));
            }
            first
        }
        V::Int(_) => Err("an integer"),
        V::Okay => Err("OK"),
        _ => Err("a value of another kind"),
    }
}

/// A subscribed connection, read with a short timeout so that a stop request is seen.
pub struct Subscription<'a> {
    pubsub: redis::PubSub<'a>,
}

impl<'a> Subscription<'a> {
    pub fn start(con: &'a mut redis::Connection, poll: Duration) -> Result<Subscription<'a>, QueueError> {
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(QUEUE).map_err(|e| match e.code() {
            Some(_) => QueueError::Protocol(format!("SUBSCRIBE {QUEUE}: {}", server_message(&e))),
            None => lost(e),
        })?;
        pubsub.set_read_timeout(Some(poll)).map_err(lost)?;
        Ok(Subscription { pubsub })
    }

    /// Leaves the subscription and returns what was published before the proxy saw that:
    /// records on their way when the collector stops are written, not dropped.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let mut rest = Vec::new();
        if self.pubsub.unsubscribe(QUEUE).is_err() {
            return rest;
        }
        // What arrived before the reply to UNSUBSCRIBE is waiting in the client; anything
        // after it is not for us any more.
        while let Ok(Some(payload)) = self.next() {
            rest.push(payload);
        }
        rest
    }

    /// What has been published and is already waiting (at most `max`), without waiting;
    /// with the error that ended the read, if one did. What was read before the error is
    /// off the proxy: the caller writes it before it handles the error.
    pub fn ready(&mut self, max: usize, poll: Duration) -> (Vec<Vec<u8>>, Option<QueueError>) {
        let mut out = Vec::new();
        if let Err(e) = self.pubsub.set_read_timeout(Some(Duration::from_millis(1))) {
            return (out, Some(lost(e)));
        }
        let mut error = None;
        while out.len() < max {
            match self.next() {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = self.pubsub.set_read_timeout(Some(poll)) {
            error = error.or(Some(lost(e)));
        }
        (out, error)
    }

    /// The next published payload; `None` when nothing came within the poll interval.
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, QueueError> {
        match self.pubsub.get_message() {
            Ok(msg) => Ok(Some(msg.get_payload_bytes().to_vec())),
            // A timeout, or a signal (SIGTERM) that cut the wait short: nothing is lost, the
            // parser keeps any half-read message for the next read.
            Err(e) if e.is_timeout() || interrupted(&e) => Ok(None),
            Err(e) if e.code().is_some() => Err(QueueError::Protocol(server_message(&e))),
            Err(e) => Err(lost(e)),
        }
    }
}

/// Whether a read was cut short by a signal (EINTR). The redis crate keeps the io::Error to
/// itself, but shows its text unchanged.
fn interrupted(e: &redis::RedisError) -> bool {
    const EINTR: i32 = 4; // Linux, macOS and the BSDs alike
    e.is_io_error() && e.to_string() == std::io::Error::from_raw_os_error(EINTR).to_string()
}

fn unreachable(e: redis::RedisError) -> QueueError {
    QueueError::Unreachable(redacted(&e))
}

/// A connection that broke mid-way (the proxy restarting, say).
fn lost(e: redis::RedisError) -> QueueError {
    if e.is_connection_refusal() {
        QueueError::Unreachable(redacted(&e))
    } else {
        QueueError::Lost(redacted(&e))
    }
}

/// An error's text without the reply it may quote (`(value was …)`): a reply can hold
/// records, and records keys.
fn redacted(e: &redis::RedisError) -> String {
    let text = e.to_string();
    match text.find("(value was") {
        Some(at) => format!("{}(reply not shown)", &text[..at]),
        None => text,
    }
}

/// The server's own words, e.g. `ERR invalid management key`.
fn server_message(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => redacted(e),
    }
}
