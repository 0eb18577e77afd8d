//! This host's name, as the kernel knows it.

/// The kernel's host name (`/proc/sys/kernel/hostname`, else `/etc/hostname`), trimmed; `None` when neither
/// can be read or the name is empty. Callers choose their own fallback.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_is_trimmed_and_never_empty() {
        if let Some(name) = super::hostname() {
            assert!(!name.is_empty());
            assert_eq!(name, name.trim());
        }
    }
}
