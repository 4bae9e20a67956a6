//! Opaque page tokens for keyset pagination: `(sort key, id)` of the last item
//! of a page, base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.key, self.id))
    }

    /// `None` for an empty token; an error message for a malformed one.
    pub fn decode(token: &str) -> Result<Option<Cursor>, String> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || "invalid page token".to_owned();
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (key, id) = text.split_once(':').ok_or_else(bad)?;
        Ok(Some(Cursor {
            key: key.parse().map_err(|_| bad())?,
            id: id.to_owned(),
        }))
    }
}

/// Cut a page fetched with `LIMIT size + 1` to `size` items and return the
/// token of the next page: the cursor after the last item kept, or empty when
/// nothing follows. `cursor_of` gives an item's sort key and id.
pub fn finish_page<T>(items: &mut Vec<T>, size: i64, cursor_of: impl Fn(&T) -> Cursor) -> String {
    let size = usize::try_from(size).unwrap_or(0);
    if items.len() <= size {
        return String::new();
    }
    items.truncate(size);
    items
        .last()
        .map(|last| cursor_of(last).encode())
        .unwrap_or_default()
}

/// Clamp a requested page size: 0 → 50, at most 200.
pub fn page_size(requested: u32) -> i64 {
    match requested {
        0 => 50,
        n => i64::from(n.min(200)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cursor {
            key: 1_700_000_000_000_000,
            id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(Some(c)));
        assert_eq!(Cursor::decode(""), Ok(None));
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("nonum:x")).is_err());
    }

    #[test]
    fn pages_are_cut_and_continued() {
        let cursor = |n: &i64| Cursor {
            key: *n,
            id: n.to_string(),
        };
        let mut full = vec![5, 4, 3];
        assert_eq!(
            finish_page(&mut full, 2, cursor),
            Cursor {
                key: 4,
                id: "4".into()
            }
            .encode()
        );
        assert_eq!(full, vec![5, 4]);
        let mut last = vec![2, 1];
        assert_eq!(finish_page(&mut last, 2, cursor), "");
        assert_eq!(last, vec![2, 1]);
    }

    #[test]
    fn page_sizes_are_clamped() {
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(10), 10);
        assert_eq!(page_size(10_000), 200);
    }
}
