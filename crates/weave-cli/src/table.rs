//! Text tables: the one way the CLI lays out columns (`weave run`'s summary, `weave plan`,
//! `weave runs` and `weave report`).

use unicode_width::UnicodeWidthStr;

/// A header and rows, each column padded to its widest cell and two spaces apart, lines
/// ending without trailing spaces.
///
/// Widths are display widths (a CJK character takes two columns, a combining mark none),
/// and cells are padded by hand rather than with `format!("{c:<w$}")`, whose width must
/// fit in a `u16`: a 100,000-character cell is laid out like any other.
pub(crate) fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.as_ref()) {
            *w = (*w).max(c.width());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (c, w) in cells.zip(&widths) {
            out.push_str(c);
            out.extend(std::iter::repeat_n(' ', w.saturating_sub(c.width()) + 2));
        }
        out.truncate(start + out[start..].trim_end().len());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_display_width() {
        let rows = vec![vec!["数据".to_owned(), "x".to_owned()], vec!["ab".to_owned(), "y".to_owned()]];
        assert_eq!(render(&["step", "kind"], &rows), "step  kind\n数据  x\nab    y\n");
    }

    // regression: a 100,000-character step id panicked in the summary table, since
    // `format!("{c:<w$}")` takes a width below 65,536 only.
    #[test]
    fn a_cell_wider_than_u16_is_laid_out() {
        let long = "a".repeat(100_000);
        let out = render(&["step", "kind"], &[vec![long.clone(), "load_csv".to_owned()]]);
        assert_eq!(out.lines().nth(1), Some(format!("{long}  load_csv").as_str()));
        assert_eq!(out.lines().next().map(str::len), Some(100_000 + 2 + 4));
    }
}
