//! Sizes and durations as users write them: `"4GB"`, `"512MiB"`, `"5s"`, `"250ms"`.

use std::time::Duration;

/// Parses a size in bytes: a number with an optional unit. Units without `i` are decimal
/// (`KB` = 1000, `GB` = 10^9), units with `i` are binary (`KiB` = 1024, `GiB` = 2^30), as
/// in SI/IEC and Kubernetes; the final `B` is optional (`4G`, `4Gi`) and case is ignored.
/// Fractions are allowed (`"1.5GB"`); the result is rounded down to whole bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write a number and a unit, such as \"4GB\" or \"512MiB\""))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown size unit: use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
            ));
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large a size"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: one or more number-unit pairs (`"5s"`, `"250ms"`, `"1m30s"`,
/// `"1.5h"`). Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`), `h`, `d`.
/// A bare number is refused, since `5` could mean seconds or milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: write a number and a unit, such as \"5s\" or \"250ms\"".to_owned());
    }
    let mut rest = t;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let u_end = rest[n_end..].find(|c: char| c.is_ascii_digit() || c == '.').map_or(rest.len(), |i| n_end + i);
        let (num, unit) = (&rest[..n_end], rest[n_end..u_end].trim());
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration: write a number and a unit, such as \"5s\" or \"250ms\""))?;
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!("`{s}` has no unit: write \"{num}s\" for seconds or \"{num}ms\" for milliseconds"));
            }
            _ => return Err(format!("`{s}` has an unknown time unit `{unit}`: use ms, s, m, h or d")),
        };
        total += value * secs;
        rest = rest[u_end..].trim_start();
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("`{s}` is out of range for a duration"))
}

/// Formats a count for people, with thousands separated by commas: `4,212`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a byte count for people: `4.0 GiB`, `512 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Formats a duration for people: `250ms`, `5s`, `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        if d.as_nanos() > 0 && ms == 0 {
            return format!("{}µs", d.as_micros());
        }
        return format!("{ms}ms");
    }
    let s = d.as_secs_f64();
    if s < 60.0 {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        return format!("{t}s");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A share as a percentage, with a decimal only where it has one: `20%`, `2.5%`, `0.1%`.
pub fn format_percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round() as i64)
    } else {
        let s = format!("{p:.2}");
        format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_written() {
        let cases: &[(&str, u64)] = &[
            ("4GB", 4_000_000_000),
            ("4gb", 4_000_000_000),
            ("512MiB", 512 << 20),
            ("4Gi", 4 << 30),
            ("1.5GB", 1_500_000_000),
            ("1_000", 1000),
            ("64 MiB", 64 << 20),
            ("0", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_bytes(s), Ok(*want), "{s}");
        }
        for bad in ["", "GB", "4XB", "-1GB", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_as_written() {
        let cases: &[(&str, u64)] =
            &[("5s", 5000), ("250ms", 250), ("1m30s", 90_000), ("1.5h", 5_400_000), ("2 min", 120_000)];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).map(|d| d.as_millis() as u64), Ok(*ms), "{s}");
        }
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("\"5s\""), "{err}");
        for bad in ["", "s", "5 fortnights", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        assert_eq!(format_bytes(4 << 30), "4 GiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(5500)), "5.5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
