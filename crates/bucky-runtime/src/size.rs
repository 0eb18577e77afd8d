//! Byte sizes as operators write them on a command line.

/// Parses `1GiB`, `512 MiB`, `64K`, `1kb`, `1000` (bytes): a whole number and an optional unit, all powers
/// of 1024 (`K`/`KB`/`KiB`, `M`…, `G`…; case does not matter). The error is one line for clap to print.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("invalid size {text:?} (e.g. 1048576, 64KiB, 1GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_in_every_spelling() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1kb"), Ok(1 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size(" 1G "), Ok(1 << 30));
    }

    #[test]
    fn refusals() {
        assert!(parse_size("").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("18446744073709551615G").is_err(), "overflow is refused, not wrapped");
    }
}
