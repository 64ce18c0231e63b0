//! How the editor writes names: as YAML scalars that read back as exactly those strings, plain
//! when that is unambiguous, double-quoted otherwise.

/// `[a, b, c]`, with names quoted where needed.
pub(super) fn flow_sequence(names: &[String]) -> String {
    let items: Vec<String> = names.iter().map(|name| scalar(name)).collect();
    format!("[{}]", items.join(", "))
}

/// A name as a YAML scalar that reads back as exactly that string: plain when that is
/// unambiguous, double-quoted otherwise.
pub(super) fn scalar(name: &str) -> String {
    if is_plain_safe(name) { name.to_owned() } else { double_quoted(name) }
}

/// Whether `name`, written plain, is read back by YAML 1.1 and 1.2 readers as that very string.
/// Conservative: it only admits `[a-zA-Z0-9][a-zA-Z0-9_.-]*` that is not a null/bool/special
/// word and does not look like a number or a date.
pub(super) fn is_plain_safe(name: &str) -> bool {
    const WORDS: [&str; 12] =
        ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf", "infinity"];
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_alphanumeric()
        || !bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return false;
    }
    if WORDS.iter().any(|word| name.eq_ignore_ascii_case(word)) {
        return false;
    }
    // Integers, floats, hex/octal/binary literals, 1.1 underscores and dates all start with a
    // digit and use only these characters.
    let numeric_looking =
        |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'x' | b'X' | b'o' | b'O' | b'_' | b'.' | b'-' | b'+');
    !(first.is_ascii_digit() && bytes.iter().all(numeric_looking))
}

fn double_quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1F}'
            | '\u{7F}'..='\u{9F}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{FEFF}'
            | '\u{FFFE}'
            | '\u{FFFF}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
