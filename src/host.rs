//! Facts about the machine and user recorded in snapshots and lock records.

/// The host name, or `unknown`.
pub fn hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|raw| raw.to_string_lossy().into_owned())
}

/// The user name from `$USER`/`$LOGNAME`, else the numeric uid.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| rustix::process::getuid().as_raw().to_string())
}

/// Effective uid.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}
