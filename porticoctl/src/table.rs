//! Plain-text tables in kubectl's style: upper-case headers, columns padded
//! to their widest cell, three spaces apart.

/// Formats `rows` under `header`.
pub fn format(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = *width));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let text = super::format(&["NAME", "STATE"], &[vec!["gateway-1".into(), "SYNCED".into()]]);
        assert_eq!(text, "NAME        STATE\ngateway-1   SYNCED\n");
    }
}
