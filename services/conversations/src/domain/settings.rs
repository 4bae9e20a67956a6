//! A workspace's settings (settings.proto): which conversations agents see,
//! what closing a conversation requires, its time zone and language. A
//! workspace that never changed them has [`WorkspaceSettings::defaults`].

use telenet_proto::conversations::v1::{AgentVisibility, ClosingNotePolicy};

use crate::error::Error;

/// The longest language tag kept (BCP 47's practical limit).
const MAX_LANGUAGE_BYTES: usize = 35;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSettings {
    pub workspace_id: String,
    pub agent_visibility: AgentVisibility,
    pub agents_see_unassigned: bool,
    pub closing_note_policy: ClosingNotePolicy,
    /// IANA name, e.g. `America/Bogota`.
    pub time_zone: String,
    /// BCP 47 tag, e.g. `es` or `pt-BR`.
    pub language: String,
    /// When they last changed; 0 for never.
    pub updated_at: i64,
    /// Who changed them last; empty for never.
    pub updated_by: String,
}

impl WorkspaceSettings {
    /// What a new workspace starts with: agents see what is assigned to
    /// them or their teams, and unassigned conversations (to pick them up);
    /// closing notes optional; UTC; English.
    pub fn defaults(workspace_id: &str) -> Self {
        Self {
            workspace_id: workspace_id.to_owned(),
            agent_visibility: AgentVisibility::AssignedToThemOrTheirTeams,
            agents_see_unassigned: true,
            closing_note_policy: ClosingNotePolicy::Optional,
            time_zone: "UTC".to_owned(),
            language: "en".to_owned(),
            updated_at: 0,
            updated_by: String::new(),
        }
    }

    /// The settings after `change`, checked; unset parts are kept.
    pub fn changed(&self, change: &SettingsChange, by: &str, at: i64) -> Result<Self, Error> {
        let mut next = self.clone();
        if change.agent_visibility != AgentVisibility::Unspecified {
            next.agent_visibility = change.agent_visibility;
        }
        if let Some(see) = change.agents_see_unassigned {
            next.agents_see_unassigned = see;
        }
        if change.closing_note_policy != ClosingNotePolicy::Unspecified {
            next.closing_note_policy = change.closing_note_policy;
        }
        if let Some(zone) = &change.time_zone {
            next.time_zone = time_zone(zone)?;
        }
        if let Some(language) = &change.language {
            next.language = language_tag(language)?;
        }
        next.updated_at = at;
        next.updated_by = by.to_owned();
        Ok(next)
    }
}

/// A change of settings: `Unspecified` and `None` leave a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub agent_visibility: AgentVisibility,
    pub agents_see_unassigned: Option<bool>,
    pub closing_note_policy: ClosingNotePolicy,
    pub time_zone: Option<String>,
    pub language: Option<String>,
}

/// An IANA time zone name as the database of zones spells it.
pub fn time_zone(value: &str) -> Result<String, Error> {
    let trimmed = value.trim();
    trimmed
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| {
            Error::InvalidArgument(format!(
                "time_zone {trimmed:?} is not an IANA time zone (e.g. America/Bogota, UTC)"
            ))
        })
}

/// A BCP 47 language tag: a 2–3 letter language, then subtags of 1–8
/// letters or digits, separated by `-`; kept as given (trimmed).
pub fn language_tag(value: &str) -> Result<String, Error> {
    let trimmed = value.trim();
    let mut parts = trimmed.split('-');
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !language_ok || !rest_ok || trimmed.len() > MAX_LANGUAGE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "language {trimmed:?} is not a BCP 47 language tag (e.g. en, es, pt-BR)"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = WorkspaceSettings::defaults("w");
        assert_eq!(
            d.agent_visibility,
            AgentVisibility::AssignedToThemOrTheirTeams
        );
        assert!(d.agents_see_unassigned);
        assert_eq!(d.closing_note_policy, ClosingNotePolicy::Optional);
        assert_eq!((d.time_zone.as_str(), d.language.as_str()), ("UTC", "en"));
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let d = WorkspaceSettings::defaults("w");
        let change = SettingsChange {
            closing_note_policy: ClosingNotePolicy::CategoryRequired,
            time_zone: Some(" America/Bogota ".into()),
            ..Default::default()
        };
        let next = d.changed(&change, "u", 7).expect("valid");
        assert_eq!(
            next.closing_note_policy,
            ClosingNotePolicy::CategoryRequired
        );
        assert_eq!(next.time_zone, "America/Bogota");
        assert_eq!(next.agent_visibility, d.agent_visibility);
        assert_eq!(next.language, "en");
        assert_eq!((next.updated_at, next.updated_by.as_str()), (7, "u"));
        let off = SettingsChange {
            agents_see_unassigned: Some(false),
            agent_visibility: AgentVisibility::All,
            language: Some("pt-BR".into()),
            ..Default::default()
        };
        let next = next.changed(&off, "u", 8).expect("valid");
        assert!(!next.agents_see_unassigned);
        assert_eq!(next.agent_visibility, AgentVisibility::All);
        assert_eq!(next.language, "pt-BR");
    }

    #[test]
    fn bad_zones_and_languages_are_named() {
        let d = WorkspaceSettings::defaults("w");
        for zone in ["Mars/Olympus", "", "utc+5"] {
            let change = SettingsChange {
                time_zone: Some(zone.into()),
                ..Default::default()
            };
            let e = d.changed(&change, "u", 1).expect_err("invalid").to_string();
            assert!(e.contains("time_zone"), "{e}");
        }
        for language in ["", "e", "english", "en_US", "en--x", "en-abcdefghi"] {
            let change = SettingsChange {
                language: Some(language.into()),
                ..Default::default()
            };
            let e = d.changed(&change, "u", 1).expect_err("invalid").to_string();
            assert!(e.contains("language"), "{language}: {e}");
        }
    }
}
