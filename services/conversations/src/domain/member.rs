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
