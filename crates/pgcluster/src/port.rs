//! Free loopback ports for a server to bind.

use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_768;

/// A free port on 127.0.0.1, released for a server to bind.
///
/// Not the kernel's pick (`bind(0)`): that comes from the ephemeral range (32768-60999 on
/// Linux), the range every outgoing connection of the machine takes its source port from, so
/// between this release and the server's bind another connection could take it ("Address
/// already in use", a cluster that does not start). The ports here come from 20000-32767, below
/// that range, start at a place of this process's own (so that test binaries running side by
/// side rarely walk the same ports) and are never handed out twice by it; each is checked
/// bindable. The same rule as `shop_suite::processes::free_port`.
///
/// # Panics
/// When no port of the range is free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32767");
}

#[cfg(test)]
mod tests {
    use super::free_port;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(
            ports.iter().all(|p| (20_000..32_768).contains(p)),
            "{ports:?}"
        );
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }
}
