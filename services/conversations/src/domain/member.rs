//! Workspaces, their users (members with an access level: agent, manager,
//! owner) and API tokens. Tokens are 256 random bits shown once; only
//! their SHA-256 hash is kept.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use telenet_proto::conversations::v1::AccessLevel;

use crate::error::{Error, require};

/// Longest workspace or member name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Every API token starts with it, so a stray one is recognisable (and
/// anything else is refused without a lookup).
pub const TOKEN_PREFIX: &str = "tlnt_";
/// The longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A user of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub workspace_id: String,
    pub name: String,
    /// Lowercase; unique in the workspace.
    pub email: String,
    pub access_level: AccessLevel,
    pub created_at: i64,
}

/// A name as stored: trimmed, 1 to [`MAX_NAME_CHARS`] characters.
pub fn name<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(Error::NameLength {
            field,
            max: MAX_NAME_CHARS,
        });
    }
    Ok(trimmed)
}

/// An e-mail address as stored: trimmed and lowercase, so one address is
/// one member however it is typed.
pub fn email(value: &str) -> Result<String, Error> {
    let normalized = value.trim().to_lowercase();
    match normalized.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && normalized.len() <= MAX_EMAIL_BYTES =>
        {
            Ok(normalized)
        }
        _ => Err(Error::NotAnEmail(value.to_owned())),
    }
}

/// Every member has an access level.
pub fn access_level(level: AccessLevel) -> Result<AccessLevel, Error> {
    if level == AccessLevel::Unspecified {
        return Err(Error::AccessLevelRequired);
    }
    Ok(level)
}

/// A token made of 32 random bytes.
pub fn token_from(random: [u8; 32]) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random))
}

/// Whether `token` can be one of ours at all.
pub fn looks_like_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// What is kept of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new workspace and its first owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewWorkspace {
    pub name: String,
    pub owner_name: String,
    pub owner_email: String,
}

/// A new workspace's checked name, owner name and owner e-mail.
pub struct CheckedWorkspace<'a> {
    pub name: &'a str,
    pub owner_name: &'a str,
    pub owner_email: String,
}

impl NewWorkspace {
    pub fn check(&self) -> Result<CheckedWorkspace<'_>, Error> {
        Ok(CheckedWorkspace {
            name: name("name", &self.name)?,
            owner_name: name("owner_name", &self.owner_name)?,
            owner_email: email(&self.owner_email)?,
        })
    }
}

/// A member to add to a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    pub workspace_id: String,
    pub name: String,
    pub email: String,
    pub access_level: AccessLevel,
}

/// A new member's checked name, e-mail and access level.
pub struct CheckedMember<'a> {
    pub name: &'a str,
    pub email: String,
    pub access_level: AccessLevel,
}

impl NewMember {
    pub fn check(&self) -> Result<CheckedMember<'_>, Error> {
        require("workspace_id", &self.workspace_id)?;
        Ok(CheckedMember {
            name: name("name", &self.name)?,
            email: email(&self.email)?,
            access_level: access_level(self.access_level)?,
        })
    }
}

/// Another API token for a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewToken {
    pub workspace_id: String,
    pub user_id: String,
    /// What the token is for, as its owner says.
    pub label: String,
    /// When it stops working (microseconds); `None`: until revoked.
    pub expires_at: Option<i64>,
}

/// The longest a token may be issued for: a year and a day.
pub const MAX_TOKEN_LIFETIME_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;
/// Characters of a token kept to recognise it by: the common `tlnt_` and
/// seven of its 43 random ones (42 bits: enough to tell one's own tokens
/// apart, far too few to guess the other 216).
pub const TOKEN_PREFIX_CHARS: usize = TOKEN_PREFIX.len() + 7;
/// Longest token label, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
const MINUTE_MICROS: i64 = 60 * 1_000_000;

/// An API token as listed: never its value, only its first characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: String,
    pub workspace_id: String,
    pub user_id: String,
    pub label: String,
    pub prefix: String,
    pub created_at: i64,
    /// Minute precision.
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl ApiToken {
    /// Whether the token still authenticates at `now`.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The first characters of a token, to recognise it by.
pub fn token_prefix(token: &str) -> String {
    token.chars().take(TOKEN_PREFIX_CHARS).collect()
}

/// A label as stored: trimmed, at most [`MAX_LABEL_CHARS`] (may be empty).
pub fn token_label(label: &str) -> Result<&str, Error> {
    let trimmed = label.trim();
    if trimmed.chars().count() > MAX_LABEL_CHARS {
        return Err(Error::InvalidArgument(format!(
            "label must be at most {MAX_LABEL_CHARS} characters"
        )));
    }
    Ok(trimmed)
}

/// A requested expiry, checked at `now`: in the future and at most
/// [`MAX_TOKEN_LIFETIME_MICROS`] ahead. `None` stays `None` (until revoked).
pub fn token_expiry(expires_at: Option<i64>, now: i64) -> Result<Option<i64>, Error> {
    match expires_at {
        None => Ok(None),
        Some(at) if at <= now => Err(Error::InvalidArgument(
            "expires_at must be in the future".into(),
        )),
        Some(at) if at - now > MAX_TOKEN_LIFETIME_MICROS => Err(Error::InvalidArgument(
            "expires_at must be at most 366 days ahead".into(),
        )),
        Some(at) => Ok(Some(at)),
    }
}

/// The minute `at` falls in, as `last_used_at` keeps it.
pub fn minute_of(at: i64) -> i64 {
    at - at.rem_euclid(MINUTE_MICROS)
}

/// Whether a use at `now` needs a write: only when the kept minute differs,
/// so a burst of requests costs one write a minute at most.
pub fn needs_last_used_write(kept: Option<i64>, now: i64) -> bool {
    kept.is_none_or(|minute| minute < minute_of(now))
}

/// Whether `caller` may see or revoke a token of `holder`: their own,
/// any as an owner, an agent's (or their own) as a manager.
pub fn may_manage_tokens_of(caller: &Member, holder: &Member) -> bool {
    caller.user_id == holder.user_id
        || match caller.access_level {
            AccessLevel::Owner => true,
            AccessLevel::Manager => holder.access_level == AccessLevel::Agent,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  Acme ").expect("ok"), "Acme");
        assert!(name("name", &"ñ".repeat(MAX_NAME_CHARS)).is_ok());
        assert_eq!(
            name("owner_name", " ").expect_err("blank").to_string(),
            "owner_name must be 1 to 100 characters"
        );
        assert!(name("name", &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn one_address_is_one_member_however_it_is_typed() {
        assert_eq!(email(" ARI@Acme.test ").expect("ok"), "ari@acme.test");
        for bad in ["ari", "@acme.test", "ari@localhost", ""] {
            assert!(matches!(email(bad), Err(Error::NotAnEmail(_))), "{bad}");
        }
        assert_eq!(
            email("ari").expect_err("bad").to_string(),
            "email \"ari\" is not an e-mail address"
        );
        let long = format!("{}@acme.test", "a".repeat(250));
        assert!(email(&long).is_err());
    }

    #[test]
    fn every_member_has_an_access_level() {
        assert!(matches!(
            access_level(AccessLevel::Unspecified),
            Err(Error::AccessLevelRequired)
        ));
        assert_eq!(
            access_level(AccessLevel::Agent).expect("ok"),
            AccessLevel::Agent
        );
    }

    #[test]
    fn tokens_are_recognisable_and_kept_only_as_hashes() {
        let token = token_from([7; 32]);
        assert!(looks_like_token(&token));
        assert!(!looks_like_token("Bearer abc"));
        // 32 bytes in unpadded base64url.
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 43);
        let hash = token_hash(&token);
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, token_hash(&token));
        assert_ne!(hash, token_hash(&token_from([8; 32])));
    }

    #[test]
    fn expiries_are_in_the_future_and_at_most_a_year_and_a_day_ahead() {
        let now = 1_000_000_000_000;
        assert_eq!(token_expiry(None, now).expect("none"), None);
        assert_eq!(
            token_expiry(Some(now + 1), now).expect("soon"),
            Some(now + 1)
        );
        let longest = now + MAX_TOKEN_LIFETIME_MICROS;
        assert_eq!(
            token_expiry(Some(longest), now).expect("max"),
            Some(longest)
        );
        for bad in [now, now - 1, longest + 1] {
            assert!(
                matches!(token_expiry(Some(bad), now), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        assert_eq!(
            token_expiry(Some(now), now).expect_err("past").to_string(),
            "expires_at must be in the future"
        );
    }

    #[test]
    fn a_token_is_valid_until_revoked_or_expired() {
        let token = ApiToken {
            id: "t".into(),
            workspace_id: "w".into(),
            user_id: "u".into(),
            label: String::new(),
            prefix: "tlnt_abcdefg".into(),
            created_at: 0,
            last_used_at: None,
            revoked_at: None,
            expires_at: Some(100),
        };
        assert!(token.is_valid_at(99));
        assert!(!token.is_valid_at(100));
        let forever = ApiToken {
            expires_at: None,
            ..token.clone()
        };
        assert!(forever.is_valid_at(i64::MAX));
        let revoked = ApiToken {
            revoked_at: Some(5),
            ..forever
        };
        assert!(!revoked.is_valid_at(1));
    }

    #[test]
    fn last_used_is_written_once_a_minute() {
        let minute = 60_000_000;
        let t = 100 * minute + 5;
        assert_eq!(minute_of(t), 100 * minute);
        assert!(needs_last_used_write(None, t));
        assert!(!needs_last_used_write(Some(100 * minute), t));
        assert!(!needs_last_used_write(Some(100 * minute), 101 * minute - 1));
        assert!(needs_last_used_write(Some(100 * minute), 101 * minute));
        assert!(
            !needs_last_used_write(Some(101 * minute), t),
            "a clock behind the kept minute writes nothing"
        );
    }

    #[test]
    fn prefixes_show_a_few_characters_only() {
        let token = token_from([7; 32]);
        let prefix = token_prefix(&token);
        assert_eq!(prefix.len(), TOKEN_PREFIX_CHARS);
        assert!(token.starts_with(&prefix));
        assert!(token_label(&"x".repeat(MAX_LABEL_CHARS + 1)).is_err());
        assert_eq!(token_label(" ci ").expect("label"), "ci");
    }

    #[test]
    fn who_may_manage_whose_tokens() {
        let at = |user: &str, level| Member {
            user_id: user.into(),
            workspace_id: "w".into(),
            name: user.into(),
            email: format!("{user}@x.test"),
            access_level: level,
            created_at: 0,
        };
        let owner = at("o", AccessLevel::Owner);
        let manager = at("m", AccessLevel::Manager);
        let other_manager = at("m2", AccessLevel::Manager);
        let agent = at("a", AccessLevel::Agent);
        let other_agent = at("a2", AccessLevel::Agent);
        assert!(may_manage_tokens_of(&agent, &agent));
        assert!(!may_manage_tokens_of(&agent, &other_agent));
        assert!(!may_manage_tokens_of(&agent, &owner));
        assert!(may_manage_tokens_of(&manager, &agent));
        assert!(may_manage_tokens_of(&manager, &manager));
        assert!(!may_manage_tokens_of(&manager, &other_manager));
        assert!(!may_manage_tokens_of(&manager, &owner));
        assert!(may_manage_tokens_of(&owner, &other_manager));
        assert!(may_manage_tokens_of(&owner, &owner));
    }

    #[test]
    fn new_members_are_checked_in_order() {
        let member = NewMember {
            workspace_id: "ws".into(),
            name: " Ari ".into(),
            email: "ARI@acme.test".into(),
            access_level: AccessLevel::Unspecified,
        };
        assert!(matches!(member.check(), Err(Error::AccessLevelRequired)));
        let bad_everything = NewMember {
            workspace_id: String::new(),
            name: String::new(),
            ..member.clone()
        };
        assert_eq!(
            bad_everything.check().err().map(|e| e.to_string()),
            Some("workspace_id is required".to_owned())
        );
        let agent = NewMember {
            access_level: AccessLevel::Agent,
            ..member
        };
        let checked = agent.check().expect("ok");
        assert_eq!(
            (checked.name, checked.email.as_str()),
            ("Ari", "ari@acme.test")
        );
    }
}
