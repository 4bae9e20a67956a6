//! The rules of contacts, without I/O: what a contact and its identities
//! are, which requests are well formed, what a new contact is called and
//! which contacts a page holds.
//!
//! Times are microseconds since the Unix epoch, as stored.

use telenet_store::cursor::{Cursor, page_size};

use crate::Error;

/// A person who writes to the workspace, with the channels they write from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: String,
    pub workspace_id: String,
    /// From the channel profile, or the identity when the channel gave none.
    pub display_name: String,
    /// Oldest first. Empty in listings, which do not read identities.
    pub identities: Vec<Identity>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A contact's address on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub channel_id: String,
    /// The contact's id on that channel (phone number, PSID, chat id, …).
    pub external_id: String,
    /// When the identity was first seen.
    pub created_at: i64,
}

/// A channel identity within a workspace. Each belongs to at most one
/// contact of the workspace; the same identity in another workspace is
/// another contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityKey {
    pub workspace_id: String,
    pub channel_id: String,
    pub external_id: String,
}

impl IdentityKey {
    /// Every part is required; the error names the first one missing.
    /// Values are kept as given.
    pub fn new(workspace_id: &str, channel_id: &str, external_id: &str) -> Result<Self, Error> {
        require("workspace_id", workspace_id)?;
        require("channel_id", channel_id)?;
        require("external_id", external_id)?;
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            channel_id: channel_id.to_owned(),
            external_id: external_id.to_owned(),
        })
    }
}

/// One contact of one workspace: another workspace's contact of the same id
/// is not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    pub workspace_id: String,
    pub contact_id: String,
}

impl ContactRef {
    /// Both parts are required; the error names the first one missing.
    pub fn new(workspace_id: &str, contact_id: &str) -> Result<Self, Error> {
        require("workspace_id", workspace_id)?;
        require("contact_id", contact_id)?;
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            contact_id: contact_id.to_owned(),
        })
    }
}

/// A contact about to be created for an identity seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    pub id: String,
    pub workspace_id: String,
    pub display_name: String,
    /// Also its `updated_at` and its identity's `created_at`.
    pub created_at: i64,
}

impl NewContact {
    /// The contact `id` for `identity`, created at `now` and named
    /// `offered_name` (the channel profile's name) or, when the channel
    /// gave none, after the identity.
    pub fn for_identity(identity: &IdentityKey, offered_name: &str, id: String, now: i64) -> Self {
        Self {
            id,
            workspace_id: identity.workspace_id.clone(),
            display_name: initial_display_name(offered_name, &identity.external_id),
            created_at: now,
        }
    }
}

/// A new contact's name: the offered one, trimmed; when blank, the
/// identity's id, so a contact is never shown without a name.
pub fn initial_display_name(offered_name: &str, external_id: &str) -> String {
    let offered_name = offered_name.trim();
    if offered_name.is_empty() {
        external_id.to_owned()
    } else {
        offered_name.to_owned()
    }
}

/// A page of a workspace's contacts, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactsPage {
    pub workspace_id: String,
    /// How many contacts at most (the requested size, clamped).
    pub size: i64,
    /// Where the previous page ended; `None` for the first page.
    pub after: Option<Cursor>,
}

impl ContactsPage {
    /// The page asked for with `page_size` (0: the default) and
    /// `page_token` (empty: the first page).
    pub fn new(workspace_id: &str, page_size_asked: u32, page_token: &str) -> Result<Self, Error> {
        require("workspace_id", workspace_id)?;
        let after = Cursor::decode(page_token).map_err(Error::InvalidArgument)?;
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            size: page_size(page_size_asked),
            after,
        })
    }
}

/// The check every required text field gets: blank is missing.
fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn identities_need_every_part_and_name_the_first_missing() {
        let key = IdentityKey::new("ws", "ch", "+1").expect("valid");
        assert_eq!(key.external_id, "+1");
        assert_eq!(
            invalid(IdentityKey::new(" ", "", "")),
            "workspace_id is required"
        );
        assert_eq!(
            invalid(IdentityKey::new("ws", "\t", "")),
            "channel_id is required"
        );
        assert_eq!(
            invalid(IdentityKey::new("ws", "ch", "")),
            "external_id is required"
        );
    }

    #[test]
    fn identities_are_kept_as_given() {
        let key = IdentityKey::new("ws", "ch", " +1 ").expect("valid");
        assert_eq!(key.external_id, " +1 ");
    }

    #[test]
    fn contact_refs_need_workspace_then_id() {
        assert_eq!(invalid(ContactRef::new("", "")), "workspace_id is required");
        assert_eq!(
            invalid(ContactRef::new("ws", " ")),
            "contact_id is required"
        );
        assert_eq!(ContactRef::new("ws", "c1").expect("valid").contact_id, "c1");
    }

    #[test]
    fn new_contacts_take_the_offered_name_or_the_identity() {
        assert_eq!(initial_display_name("  Ana ", "+1"), "Ana");
        assert_eq!(initial_display_name(" ", "+2"), "+2");
        assert_eq!(initial_display_name("", "+3"), "+3");

        let key = IdentityKey::new("ws", "ch", "+4").expect("valid");
        let new = NewContact::for_identity(&key, "", "c4".into(), 42);
        assert_eq!(
            new,
            NewContact {
                id: "c4".into(),
                workspace_id: "ws".into(),
                display_name: "+4".into(),
                created_at: 42,
            }
        );
    }

    #[test]
    fn pages_clamp_their_size_and_resume_after_their_token() {
        let first = ContactsPage::new("ws", 0, "").expect("first page");
        assert_eq!((first.size, first.after), (50, None));
        assert_eq!(ContactsPage::new("ws", 10_000, "").expect("big").size, 200);

        let cursor = Cursor {
            key: 7,
            id: "c7".into(),
        };
        let next = ContactsPage::new("ws", 2, &cursor.encode()).expect("next page");
        assert_eq!((next.size, next.after), (2, Some(cursor)));

        assert_eq!(
            invalid(ContactsPage::new("ws", 2, "%%")),
            "invalid page token"
        );
        assert_eq!(
            invalid(ContactsPage::new("", 2, "%%")),
            "workspace_id is required"
        );
    }
}
