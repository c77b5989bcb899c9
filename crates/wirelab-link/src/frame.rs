//! Ethernet and IPv4 framing for the router front end ([`crate::router`]): parse a received
//! frame, decrement the TTL with a fresh header checksum, rebuild the frame for the other side,
//! and read the kernel's neighbour table (`/proc/net/arp`). Pure: no I/O.

use std::net::Ipv4Addr;

/// Ethernet header length (no VLAN tag: the lab's bridges add none).
pub const ETH_HEADER: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// The largest frame one 1500-byte MTU allows (header included).
pub const MAX_FRAME: usize = 1500 + ETH_HEADER;

/// A MAC address.
pub type Mac = [u8; 6];

/// What a received Ethernet frame carries, when it is an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Frame {
    /// Destination MAC.
    pub dst_mac: Mac,
    /// Source MAC.
    pub src_mac: Mac,
    /// IPv4 source address.
    pub src: Ipv4Addr,
    /// IPv4 destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// IPv4 header length, bytes.
    pub header_len: usize,
    /// The IP packet's length (its total-length field): the frame may carry padding after it.
    pub total_len: usize,
}

/// Why a frame is not forwarded as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than an Ethernet plus a minimal IPv4 header.
    Short,
    /// Another EtherType.
    NotIpv4,
    /// The IP version field is not 4.
    BadVersion,
    /// The header length field is below 5 words or past the packet.
    BadHeaderLength,
    /// The total-length field is below the header or past the frame.
    BadTotalLength,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Short => "frame too short",
            FrameError::NotIpv4 => "not IPv4",
            FrameError::BadVersion => "IP version is not 4",
            FrameError::BadHeaderLength => "bad IPv4 header length",
            FrameError::BadTotalLength => "bad IPv4 total length",
        })
    }
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Parses an Ethernet frame carrying IPv4.
pub fn parse(frame: &[u8]) -> Result<Ipv4Frame, FrameError> {
    if frame.len() < ETH_HEADER + 20 {
        return Err(FrameError::Short);
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return Err(FrameError::NotIpv4);
    }
    let ip = &frame[ETH_HEADER..];
    if ip[0] >> 4 != 4 {
        return Err(FrameError::BadVersion);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len < 20 || header_len > ip.len() {
        return Err(FrameError::BadHeaderLength);
    }
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total_len < header_len || total_len > ip.len() {
        return Err(FrameError::BadTotalLength);
    }
    Ok(Ipv4Frame {
        dst_mac: mac_at(frame, 0),
        src_mac: mac_at(frame, 6),
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ttl: ip[8],
        header_len,
        total_len,
    })
}

/// The Internet checksum (RFC 1071) of `data` (an odd last byte is padded with zero).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Decrements the TTL of the IPv4 header at the start of `ip` (of `header_len` bytes, as
/// [`parse`] found) and writes a fresh header checksum. Returns `false`, changing nothing,
/// when the TTL is 0 or 1: a router drops such a packet.
pub fn decrement_ttl(ip: &mut [u8], header_len: usize) -> bool {
    if ip.len() < header_len || header_len < 20 || ip[8] <= 1 {
        return false;
    }
    ip[8] -= 1;
    ip[10] = 0;
    ip[11] = 0;
    let c = checksum(&ip[..header_len]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    true
}

/// Writes into `out` an Ethernet frame from `src` to `dst` carrying the IPv4 packet `ip`.
pub fn build(dst: Mac, src: Mac, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out.extend_from_slice(ip);
}

/// The IPv4 destination of an IP packet (`None` if it is too short to have one).
pub fn ipv4_dst(ip: &[u8]) -> Option<Ipv4Addr> {
    (ip.len() >= 20).then(|| Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]))
}

/// Parses a MAC written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// The complete entries of `/proc/net/arp` text: (address, MAC, interface). Incomplete ones
/// (flags 0x0, or an all-zero MAC) are left out.
pub fn parse_arp_table(text: &str) -> Vec<(Ipv4Addr, Mac, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[2] == "0x0" {
                return None;
            }
            let mac = parse_mac(f[3])?;
            (mac != [0; 6]).then(|| Some((f[0].parse().ok()?, mac, f[5].to_string())))?
        })
        .collect()
}

/// An IPv4 subnet, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Subnet {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a subnet (a.b.c.d/len)"))?;
        let addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|&n| n <= 32)
            .ok_or_else(|| format!("'{l}' is not a prefix length (0..=32)"))?;
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with a 20-byte IPv4 header (valid checksum), `payload` bytes and
    /// `pad` bytes of Ethernet padding.
    fn frame(ttl: u8, payload: usize, pad: usize) -> Vec<u8> {
        let total = 20 + payload;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            ttl,
            17,
            0,
            0,
            198,
            18,
            0,
            100,
            198,
            19,
            0,
            100,
        ];
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend(std::iter::repeat_n(0xab, payload));
        let mut f = Vec::new();
        build([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 100], &ip, &mut f);
        f.extend(std::iter::repeat_n(0, pad));
        f
    }

    #[test]
    fn parses_an_ipv4_frame_and_sees_past_the_padding() {
        let f = frame(64, 6, 20);
        let p = parse(&f).unwrap();
        assert_eq!(p.dst_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(p.src_mac, [2, 0, 0, 0, 0, 100]);
        assert_eq!(p.src, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(p.dst, Ipv4Addr::new(198, 19, 0, 100));
        assert_eq!((p.ttl, p.header_len, p.total_len), (64, 20, 26));
        assert_eq!(ipv4_dst(&f[ETH_HEADER..]), Some(p.dst));
    }

    #[test]
    fn refuses_what_is_not_a_whole_ipv4_packet() {
        assert_eq!(parse(&[0; 20]), Err(FrameError::Short));
        let mut f = frame(64, 0, 0);
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(parse(&f), Err(FrameError::NotIpv4));
        let mut f = frame(64, 0, 0);
        f[14] = 0x65;
        assert_eq!(parse(&f), Err(FrameError::BadVersion));
        let mut f = frame(64, 0, 0);
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(FrameError::BadHeaderLength));
        let mut f = frame(64, 0, 0);
        f[14] = 0x4f; // 60-byte header in a 20-byte packet
        assert_eq!(parse(&f), Err(FrameError::BadHeaderLength));
        let mut f = frame(64, 10, 0);
        f[17] = 200; // total length past the frame
        assert_eq!(parse(&f), Err(FrameError::BadTotalLength));
    }

    #[test]
    fn ttl_decrement_keeps_the_header_checksum_valid() {
        let mut f = frame(64, 8, 0);
        let ip = &mut f[ETH_HEADER..];
        assert!(decrement_ttl(ip, 20));
        assert_eq!(ip[8], 63);
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&ip[..20]), 0);
        let mut f = frame(1, 8, 0);
        let before = f.clone();
        assert!(!decrement_ttl(&mut f[ETH_HEADER..], 20));
        assert_eq!(f, before, "a packet at TTL 1 is left alone (and dropped)");
    }

    #[test]
    fn checksum_matches_rfc_1071_examples() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum (one's complement) to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn reads_complete_arp_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.19.0.100     0x1         0x2         02:42:c6:13:00:64     *        eth1\n\
                 198.18.0.9       0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 198.18.0.100     0x1         0x2         02:42:C6:12:00:64     *        eth0\n";
        let e = parse_arp_table(t);
        assert_eq!(
            e,
            vec![
                (
                    Ipv4Addr::new(198, 19, 0, 100),
                    [2, 0x42, 0xc6, 0x13, 0, 0x64],
                    "eth1".to_string()
                ),
                (
                    Ipv4Addr::new(198, 18, 0, 100),
                    [2, 0x42, 0xc6, 0x12, 0, 0x64],
                    "eth0".to_string()
                )
            ]
        );
        assert_eq!(parse_mac("02:42:c6:13:00"), None);
        assert_eq!(parse_mac("02:42:c6:13:00:64:01"), None);
    }

    #[test]
    fn subnets_parse_and_contain() {
        let s: Subnet = "198.18.0.0/24".parse().unwrap();
        assert!(s.contains(Ipv4Addr::new(198, 18, 0, 77)));
        assert!(!s.contains(Ipv4Addr::new(198, 19, 0, 77)));
        assert_eq!(s.to_string(), "198.18.0.0/24");
        assert!("198.18.0.0".parse::<Subnet>().is_err());
        assert!("198.18.0.0/33".parse::<Subnet>().is_err());
        assert!("x/24".parse::<Subnet>().is_err());
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }
}
