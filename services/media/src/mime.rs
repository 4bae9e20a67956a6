//! The declared MIME type of an upload.
//!
//! Media types are only checked for shape here: what a file really is gets
//! decided by probing the bytes, never by trusting the declaration. The shape
//! check keeps junk (empty strings, paths, control characters) out of the
//! database and out of the `Content-Type` headers other services will build
//! from it.

/// Longest MIME type accepted, parameters included.
pub const MAX_LEN: usize = 255;

/// `type/subtype`, optionally followed by `; name=value` parameters, with
/// names as RFC 6838 restricts them. Returns the normalised form: type,
/// subtype and parameter names lowercased (they are case-insensitive),
/// parameters separated by `"; "`, values kept as given.
pub fn normalize(declared: &str) -> Result<String, String> {
    const SHAPE: &str = "mime_type must look like type/subtype (e.g. audio/ogg)";
    if declared.chars().any(char::is_control) {
        return Err("mime_type must not contain control characters".to_owned());
    }
    let declared = declared.trim();
    if declared.len() > MAX_LEN {
        return Err(format!("mime_type is longer than {MAX_LEN} characters"));
    }
    let mut parts = declared.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/').ok_or_else(|| SHAPE.to_owned())?;
    if !is_restricted_name(kind) || !is_restricted_name(subtype) {
        return Err(SHAPE.to_owned());
    }
    let mut normalized = essence.to_ascii_lowercase();
    for param in parts {
        let (name, value) = param
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("mime_type parameter {:?} must be name=value", param.trim()))?;
        if !is_restricted_name(name)
            || value.is_empty()
            || !value.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "mime_type parameter {:?} must be name=value",
                param.trim()
            ));
        }
        normalized.push_str("; ");
        normalized.push_str(&name.to_ascii_lowercase());
        normalized.push('=');
        normalized.push_str(value);
    }
    Ok(normalized)
}

/// RFC 6838 `restricted-name`: a letter or digit, then up to 126 of letters,
/// digits and `!#$&-^_.+`.
fn is_restricted_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.len() <= 127
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn accepts_and_normalises_media_types() {
        assert_eq!(normalize("audio/ogg").as_deref(), Ok("audio/ogg"));
        assert_eq!(normalize(" Audio/OGG ").as_deref(), Ok("audio/ogg"));
        assert_eq!(
            normalize("application/vnd.api+json").as_deref(),
            Ok("application/vnd.api+json")
        );
        assert_eq!(
            normalize("audio/ogg;codecs=opus").as_deref(),
            Ok("audio/ogg; codecs=opus")
        );
        assert_eq!(
            normalize("text/plain; Charset=UTF-8").as_deref(),
            Ok("text/plain; charset=UTF-8")
        );
    }

    #[test]
    fn rejects_what_is_not_type_slash_subtype() {
        for bad in [
            "",
            "audio",
            "audio/",
            "/ogg",
            "audio/ogg/x",
            "audio /ogg",
            "../etc/passwd",
            "audio/ogg\n",
            "audio/ogg; codecs",
            "audio/ogg; =opus",
            "audio/ogg; codecs=",
            "audio/ogg; codecs=a b",
            ".audio/ogg",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(normalize(&format!("audio/{}", "x".repeat(300))).is_err());
    }
}
