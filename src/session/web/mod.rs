//! A web browser's connection: HTTP requests (the page, the dashboard), and the WebSocket that
//! carries a chat session like any telnet client's.
//!
//! INTERFACE #19: the web helper writes this module (`request`, `socket`, `page`); the lead
//! writes `json` (what the session sends a browser).

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;

use crate::master::WebStart;
use crate::session::SessionSettings;
use crate::session::transport::ClientTransport;

pub mod json;
pub(in crate::session) mod view;

/// Serves one web connection: reads its request, answers it, and runs a chat session on its
/// WebSocket if it asked for one. Returns the exit status of the session child.
pub fn run(
    client: Box<dyn ClientTransport>,
    peer: SocketAddr,
    settings: SessionSettings,
    reporter: Option<StdUnixDatagram>,
    web: WebStart,
) -> i32 {
    let _ = (web,);
    crate::session::run(client, peer, settings, reporter)
}
