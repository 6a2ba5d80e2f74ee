//! The emulated servers' clocks: start times as a server prints them, and the clients'
//! wall clock that TTLs are set on.

/// Seconds since the Pegasus epoch (2016-01-01 00:00:00 UTC) on the wall clock: clients put
/// a TTL as an expiry on that clock (`expire_ts_seconds`), so the data path reads it too.
#[allow(clippy::disallowed_methods)] // the clients' clock, not the engine's
pub(crate) fn pegasus_now() -> i32 {
    const EPOCH: u64 = 1_451_606_400;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i32::try_from(secs.saturating_sub(EPOCH)).unwrap_or(i32::MAX)
}

/// An emulated time as a server prints it (`YYYY-MM-DD hh:mm:ss`): the emulated cluster's
/// clock starts at 2026-01-01 00:00:00 and runs in emulated milliseconds.
pub(crate) fn wall_time(ms: u64) -> String {
    let secs = ms / 1000;
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = 20_454 + (secs / 86_400) as i64 + 719_468; // 20,454 days: 2026-01-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::wall_time;

    #[test]
    fn emulated_start_times_print_as_a_server_prints_them() {
        assert_eq!(wall_time(0), "2026-01-01 00:00:00");
        assert_eq!(wall_time(3_723_999), "2026-01-01 01:02:03");
        assert_eq!(wall_time(59 * 86_400_000), "2026-03-01 00:00:00");
        assert_eq!(wall_time(365 * 86_400_000), "2027-01-01 00:00:00");
    }
}
