//! The `workspace_settings` table: one row per workspace that changed its
//! settings; none means the defaults.

use sqlx::{Any, Executor, Row};
use telenet_proto::conversations::v1::{AgentVisibility, ClosingNotePolicy};
use telenet_store::{StoreError, Tx, sqlx};

use super::enum_or;
use crate::domain::settings::WorkspaceSettings;

/// The workspace's settings; the defaults when it never changed them.
pub(crate) async fn settings<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> Result<WorkspaceSettings, StoreError> {
    let row = sqlx::query(
        "SELECT agent_visibility, agents_see_unassigned, closing_note_policy, time_zone, \
         language, updated_at, updated_by FROM workspace_settings WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(WorkspaceSettings::defaults(workspace_id));
    };
    let see: i64 = row.try_get("agents_see_unassigned")?;
    Ok(WorkspaceSettings {
        workspace_id: workspace_id.to_owned(),
        agent_visibility: enum_or(
            row.try_get("agent_visibility")?,
            AgentVisibility::AssignedToThemOrTheirTeams,
        ),
        agents_see_unassigned: see != 0,
        closing_note_policy: enum_or(
            row.try_get("closing_note_policy")?,
            ClosingNotePolicy::Optional,
        ),
        time_zone: row.try_get("time_zone")?,
        language: row.try_get("language")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

/// Write the workspace's settings, whole.
pub(crate) async fn put_settings(tx: &mut Tx<'_>, s: &WorkspaceSettings) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workspace_settings (workspace_id, agent_visibility, agents_see_unassigned, \
         closing_note_policy, time_zone, language, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (workspace_id) DO UPDATE SET agent_visibility = excluded.agent_visibility, \
         agents_see_unassigned = excluded.agents_see_unassigned, \
         closing_note_policy = excluded.closing_note_policy, time_zone = excluded.time_zone, \
         language = excluded.language, updated_at = excluded.updated_at, \
         updated_by = excluded.updated_by",
    )
    .bind(&s.workspace_id)
    .bind(i64::from(s.agent_visibility as i32))
    .bind(i64::from(s.agents_see_unassigned))
    .bind(i64::from(s.closing_note_policy as i32))
    .bind(&s.time_zone)
    .bind(&s.language)
    .bind(s.updated_at)
    .bind(&s.updated_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
