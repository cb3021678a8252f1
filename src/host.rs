//! Facts about the machine and user recorded in snapshots and lock records.

/// The host name (the `nodename` of `uname(2)`), lossily decoded.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
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
