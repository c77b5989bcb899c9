//! Ethernet frames as the lab's router reads them from its packet sockets (`frame::parse`,
//! `frame::decrement_ttl`), and `/proc/net/arp` text (`frame::parse_arp_table`): anything a
//! container on the lab's networks sends reaches the parser.
//!
//! Asserts: no panic; an accepted frame's IPv4 header and total length lie inside the frame;
//! after a TTL decrement the header's checksum verifies (sums to zero) and the TTL is one less;
//! a packet at TTL 0 or 1 is refused and left unchanged; rebuilding the frame around the packet
//! parses back to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab_link::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for (_, mac, _) in frame::parse_arp_table(text) {
            assert_ne!(mac, [0; 6]);
        }
    }
    let Ok(f) = frame::parse(data) else {
        return;
    };
    assert!(f.header_len >= 20 && f.header_len <= f.total_len);
    assert!(frame::ETH_HEADER + f.total_len <= data.len());
    let mut ip = data[frame::ETH_HEADER..frame::ETH_HEADER + f.total_len].to_vec();
    let before = ip.clone();
    if frame::decrement_ttl(&mut ip, f.header_len) {
        assert_eq!(ip[8], f.ttl - 1);
        assert_eq!(frame::checksum(&ip[..f.header_len]), 0, "header checksum after TTL-1");
        assert_eq!(ip[f.header_len..], before[f.header_len..], "payload untouched");
    } else {
        assert!(f.ttl <= 1);
        assert_eq!(ip, before);
    }
    let mut out = Vec::new();
    frame::build(f.src_mac, f.dst_mac, &ip, &mut out);
    let g = frame::parse(&out).expect("a rebuilt frame parses");
    assert_eq!((g.src, g.dst, g.total_len), (f.src, f.dst, f.total_len));
    assert_eq!((g.src_mac, g.dst_mac), (f.dst_mac, f.src_mac));
    assert_eq!(frame::ipv4_dst(&ip), Some(f.dst));
});
