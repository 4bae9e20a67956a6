//! AMQP 0-9-1 topic routing, exactly as RabbitMQ's topic exchange does it, so
//! the in-memory bus routes the same events to the same queues.
//!
//! A routing key and a binding pattern are lists of words separated by `.`.
//! In a pattern, a word that is exactly `*` matches exactly one word and a word
//! that is exactly `#` matches zero or more words; every other word (including
//! `a*` or `#b`) matches itself literally. As in RabbitMQ, the empty string is
//! zero words (so `#` matches it), while `a.` is the two words `a` and ``.

/// Longest routing key, pattern or name AMQP can carry (a "short string").
pub const MAX_NAME_LEN: usize = 255;

/// Whether `routing_key` matches the topic `pattern`.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    matches_words(&pattern, &key)
}

/// Checks what RabbitMQ would refuse, so both buses refuse the same inputs.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    check_short("binding pattern", pattern)
}

/// Checks what RabbitMQ would refuse, so both buses refuse the same inputs.
pub fn check_routing_key(routing_key: &str) -> Result<(), String> {
    check_short("routing key", routing_key)
}

pub(crate) fn check_short(what: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} is {} bytes long; AMQP allows at most {MAX_NAME_LEN}",
            value.len()
        ));
    }
    Ok(())
}

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Dynamic programming over (pattern prefix, key prefix) so that patterns with
/// many `#` words stay linear in size instead of backtracking exponentially.
fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    // row[j]: pattern[..i] matches key[..j]
    let mut row = vec![false; key.len() + 1];
    row[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        match *word {
            "#" => {
                // zero words (row[j]) or one more word (next[j-1])
                next[0] = row[0];
                for j in 1..=key.len() {
                    next[j] = row[j] || next[j - 1];
                }
            }
            // exactly one word: shift by one
            "*" => next[1..].copy_from_slice(&row[..key.len()]),
            literal => {
                for j in 1..=key.len() {
                    next[j] = row[j - 1] && key[j - 1] == literal;
                }
            }
        }
        row = next;
    }
    row[key.len()]
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_words_match_only_themselves() {
        assert!(matches("inbound.message", "inbound.message"));
        assert!(!matches("inbound.message", "inbound.messages"));
        assert!(!matches("inbound.message", "inbound"));
        assert!(!matches("inbound", "inbound.message"));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("inbound.*", "inbound.message"));
        assert!(matches("*.message", "inbound.message"));
        assert!(matches("*.*", "a.b"));
        assert!(!matches("inbound.*", "inbound"));
        assert!(!matches("inbound.*", "inbound.message.created"));
        assert!(!matches("*", ""));
        assert!(matches("*", "a"));
        // An empty word is still a word.
        assert!(matches("a.*", "a."));
        assert!(matches("*.b", ".b"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(matches("#", ""));
        assert!(matches("#", "a"));
        assert!(matches("#", "a.b.c"));
        assert!(matches("inbound.#", "inbound"));
        assert!(matches("inbound.#", "inbound.message"));
        assert!(matches("inbound.#", "inbound.message.created"));
        assert!(!matches("inbound.#", "outbound.message"));
        assert!(matches("#.created", "created"));
        assert!(matches("#.created", "contact.created"));
        assert!(matches("a.#.z", "a.z"));
        assert!(matches("a.#.z", "a.b.c.z"));
        assert!(!matches("a.#.z", "a.b.c"));
    }

    #[test]
    fn wildcards_combine() {
        assert!(matches("#.*", "a"));
        assert!(!matches("#.*", ""));
        assert!(matches("*.#.*", "a.b"));
        assert!(!matches("*.#.*", "a"));
        assert!(matches("#.#", ""));
        assert!(matches("a.#.#.b", "a.b"));
        assert!(matches("a.*.#", "a.b"));
        assert!(!matches("a.*.#", "a"));
    }

    #[test]
    fn wildcards_inside_words_are_literal() {
        assert!(!matches("in*.message", "inbound.message"));
        assert!(matches("in*.message", "in*.message"));
        assert!(!matches("a#", "a.b"));
    }

    #[test]
    fn empty_pattern_matches_only_the_empty_key() {
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        let pattern = vec!["#"; 60].join(".") + ".x";
        let key = vec!["a"; 60].join(".");
        assert!(!matches(&pattern, &key));
        assert!(matches(&pattern, &(key + ".x")));
    }
}
