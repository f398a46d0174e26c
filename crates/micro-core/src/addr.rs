//! Listen and advertise addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Turns go-micro's address forms into something to bind: `:50051` means all
/// interfaces, port 50051; an empty string means all interfaces, any free port.
pub(crate) fn listen_address(address: &str) -> String {
    let address = address.trim();
    if address.is_empty() {
        "0.0.0.0:0".to_string()
    } else if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

/// The address to announce for a bound socket: the socket's own address, unless it is
/// a wildcard (0.0.0.0 or ::), which other hosts cannot dial; then the host's first
/// private IPv4 address, any other non-loopback one, or loopback as a last resort.
pub(crate) fn advertise_address(bound: &str) -> String {
    let Ok(socket) = bound.parse::<SocketAddr>() else {
        return bound.to_string();
    };
    if !socket.ip().is_unspecified() {
        return socket.to_string();
    }
    SocketAddr::new(host_ip(), socket.port()).to_string()
}

fn host_ip() -> IpAddr {
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let v4 = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    };
    let usable = |ip: &Ipv4Addr| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified();
    addrs
        .iter()
        .filter_map(v4)
        .find(|ip| usable(ip) && ip.is_private())
        .or_else(|| addrs.iter().filter_map(v4).find(usable))
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_address_forms() {
        assert_eq!(listen_address(""), "0.0.0.0:0");
        assert_eq!(listen_address(":50051"), "0.0.0.0:50051");
        assert_eq!(listen_address("127.0.0.1:9"), "127.0.0.1:9");
    }

    #[test]
    fn never_advertises_a_wildcard() {
        let advertised: SocketAddr = advertise_address("0.0.0.0:4000").parse().unwrap();
        assert!(!advertised.ip().is_unspecified());
        assert_eq!(advertised.port(), 4000);
        assert_eq!(advertise_address("127.0.0.1:4000"), "127.0.0.1:4000");
    }
}
