//! Any bytes from a client: the telnet layer never panics, never passes a command byte as
//! data without its IAC IAC escape, and its answers stay bounded.
#![no_main]

use chatd::session::telnet::{IAC, Telnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut telnet = Telnet::new();
    let (mut data, mut reply, mut signals) = (Vec::new(), Vec::new(), Vec::new());
    // Split in two reads at a point the input chooses, as TCP may.
    let split = input.first().map_or(0, |&b| usize::from(b) % (input.len() + 1));
    telnet.decode(&input[..split], &mut data, &mut reply, &mut signals);
    telnet.decode(&input[split..], &mut data, &mut reply, &mut signals);
    assert!(data.len() <= input.len());
    let iacs_in = input.iter().filter(|&&b| b == IAC).count();
    let iacs_out = data.iter().filter(|&&b| b == IAC).count();
    assert!(iacs_out * 2 <= iacs_in, "an IAC data byte arrives doubled");
    assert!(reply.len() <= 64 + 3 * 2 * 256 + input.len() * 16);
});
