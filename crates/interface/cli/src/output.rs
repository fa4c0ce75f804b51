//! Output for people and programs: tables, times, JSON.

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// A borderless table with a header row, wrapped to the terminal.
pub(crate) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_header(header);
    // Wrapped to the terminal's width when it reports a usable one; some (a pty without a
    // size, an editor's terminal) say 0 columns, which would squeeze every cell to a letter.
    let arrangement = match t.width() {
        Some(w) if w >= MIN_WIDTH => ContentArrangement::Dynamic,
        _ => ContentArrangement::Disabled,
    };
    t.set_content_arrangement(arrangement);
    t
}

/// Narrower terminals get tables unwrapped (they scroll) rather than squeezed.
const MIN_WIDTH: u16 = 40;

/// Prints a value as pretty JSON on stdout.
pub(crate) fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

/// A timestamp in the local time zone, to the second.
pub(crate) fn time(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `-` for nothing.
pub(crate) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}
