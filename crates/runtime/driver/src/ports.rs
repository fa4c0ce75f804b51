//! Instance ports: `$PORT` for each web instance, never one that is in use.
//!
//! A port is handed out only if the kernel lets us bind it on loopback right now and it is not
//! held by another instance we started (which may not be listening yet). Ports of adopted
//! instances are reserved when they are adopted.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// See the module docs.
#[derive(Debug, Default)]
pub struct PortAllocator {
    held: Mutex<HashSet<u16>>,
}

impl PortAllocator {
    /// A free port, now held until [`release`](Self::release).
    pub fn allocate(&self) -> std::io::Result<u16> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..64 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            if held.insert(port) {
                return Ok(port);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port after 64 tries",
        ))
    }

    /// Marks a port as held (an adopted instance's).
    pub fn reserve(&self, port: u16) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port);
    }

    /// Gives a port back.
    pub fn release(&self, port: u16) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_held_or_bound_port() {
        let ports = PortAllocator::default();
        let bound = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy = bound.local_addr().unwrap().port();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let p = ports.allocate().unwrap();
            assert_ne!(p, busy);
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        ports.release(*seen.iter().next().unwrap());
    }
}
