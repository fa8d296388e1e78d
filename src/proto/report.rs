//! The admission report: the datagram a session child sends the master, on the socket the
//! master gave it, when its client stops waiting to log in (once), and each time its client
//! proves a wrong password (a penalty trip for its address).
//!
//! It owns the report's bytes (the sender's pid, little-endian, then an optional detail
//! byte), shared by the session that writes it and the master that reads it, so that neither
//! role names the other. It must not do I/O.

/// The detail byte (after the pid) for a session that answered an HTTP request: the client is
/// no longer waiting to log in, but it was not admitted either (its source's trips are not
/// forgiven), and it did not leave "before choosing a nickname". No detail byte: admitted.
pub const REPORT_HTTP_ANSWERED: u8 = 1;

/// The detail byte for a wrong password: the client's address trips, as for a login that
/// timed out.
pub const REPORT_AUTH_FAILED: u8 = 2;

/// The detail byte for a client behind a reverse proxy: the session read the client's own
/// address from the proxy's `X-Forwarded-For`; 4 or 16 address bytes follow. The master
/// believes it only from a child whose TCP peer is one of `trusted_proxies`.
pub const REPORT_FORWARDED: u8 = 3;

/// The longest report; a longer datagram is cut to this when read, and then means nothing.
pub const REPORT_MAX: usize = 21;

/// What a session reported about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The client chose a nickname (sshd's MaxStartups stops counting it).
    Admitted(i32),
    /// The client was a web request, answered and gone.
    AnsweredHttp(i32),
    /// The client proved a wrong password.
    AuthFailed(i32),
    /// The client's own address, as its (trusted) proxy forwarded it.
    Forwarded(i32, std::net::IpAddr),
}

/// The report that a session's client is `addr`, as its proxy said.
pub fn forwarded(pid: i32, addr: std::net::IpAddr) -> Vec<u8> {
    let mut datagram = pid.to_le_bytes().to_vec();
    datagram.push(REPORT_FORWARDED);
    match addr {
        std::net::IpAddr::V4(v4) => datagram.extend_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => datagram.extend_from_slice(&v6.octets()),
    }
    datagram
}

/// Reads one report; `None` for a datagram that is no report.
pub fn decode(datagram: &[u8]) -> Option<Report> {
    match *datagram {
        [a, b, c, d] => Some(Report::Admitted(i32::from_le_bytes([a, b, c, d]))),
        [a, b, c, d, REPORT_HTTP_ANSWERED] => {
            Some(Report::AnsweredHttp(i32::from_le_bytes([a, b, c, d])))
        }
        [a, b, c, d, REPORT_AUTH_FAILED] => {
            Some(Report::AuthFailed(i32::from_le_bytes([a, b, c, d])))
        }
        [a, b, c, d, REPORT_FORWARDED, ref addr @ ..] => {
            let pid = i32::from_le_bytes([a, b, c, d]);
            let addr = match addr.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(addr).ok()?),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
                _ => return None,
            };
            Some(Report::Forwarded(pid, addr))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_a_pid_and_what_became_of_its_client() {
        let pid = 123_456_i32.to_le_bytes();
        assert_eq!(decode(&pid), Some(Report::Admitted(123_456)));
        let http = [pid[0], pid[1], pid[2], pid[3], REPORT_HTTP_ANSWERED];
        assert_eq!(decode(&http), Some(Report::AnsweredHttp(123_456)));
        let failed = [pid[0], pid[1], pid[2], pid[3], REPORT_AUTH_FAILED];
        assert_eq!(decode(&failed), Some(Report::AuthFailed(123_456)));
        assert_eq!(decode(&[pid[0], pid[1], pid[2], pid[3], 9]), None, "an unknown detail");
        assert_eq!(decode(&pid[..3]), None);
        assert_eq!(decode(&[]), None);
        let v4 = std::net::IpAddr::from([198, 51, 100, 7]);
        assert_eq!(decode(&forwarded(123_456, v4)), Some(Report::Forwarded(123_456, v4)));
        let v6 = std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        assert_eq!(decode(&forwarded(7, v6)), Some(Report::Forwarded(7, v6)));
        let mut cut = forwarded(7, v4);
        cut.pop();
        assert_eq!(decode(&cut), None, "an address cut short");
    }
}
