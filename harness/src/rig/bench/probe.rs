//! The real [`super::target::Target`]: a debug probe, through probe-rs.
// PLACEHOLDER until the probe-rs implementation lands (replaced wholesale on merge).

/// `VID:PID[:SERIAL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSelector {
    /// USB vendor ID.
    pub vendor_id: u16,
    /// USB product ID.
    pub product_id: u16,
    /// Serial number.
    pub serial: Option<String>,
}

impl std::str::FromStr for ProbeSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let hex = |p: Option<&str>| {
            p.and_then(|p| u16::from_str_radix(p, 16).ok())
                .ok_or_else(|| "expected VID:PID[:SERIAL]".to_owned())
        };
        Ok(ProbeSelector {
            vendor_id: hex(parts.next())?,
            product_id: hex(parts.next())?,
            serial: parts.next().map(str::to_owned),
        })
    }
}
