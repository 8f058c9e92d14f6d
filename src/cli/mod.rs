//! The command line's own work beyond serving: the config summary and the tenant lifecycle.

pub mod summary;
pub mod tenant;

/// Sends SIGHUP to the process named in `pid_file`; its pid.
pub fn send_hangup(pid_file: &std::path::Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read the pid file {}: {e}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| format!("{} does not hold a process id", pid_file.display()))?;
    // SAFETY: kill(2) with a positive pid signals that one process; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(pid)
}
