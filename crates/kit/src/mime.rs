//! MIME type helpers shared by the services that compare or name files.

/// The essence of a MIME type: `type/subtype` in lowercase, parameters
/// dropped (`" Audio/OGG; codecs=opus"` → `"audio/ogg"`).
pub fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_do_not_matter() {
        assert_eq!(essence(" Audio/OGG; codecs=opus"), "audio/ogg");
        assert_eq!(essence("image/png"), "image/png");
        assert_eq!(essence(""), "");
    }
}
