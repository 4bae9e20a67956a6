-- A workspace's settings (settings.proto): what agents see, what closing
-- requires, its time zone and language. A workspace without a row has the
-- defaults; the first change writes one. Enums are stored by number,
-- booleans as 0/1.
CREATE TABLE workspace_settings (
    workspace_id           TEXT   PRIMARY KEY,
    agent_visibility       BIGINT NOT NULL,
    agents_see_unassigned  BIGINT NOT NULL,
    closing_note_policy    BIGINT NOT NULL,
    time_zone              TEXT   NOT NULL,
    language               TEXT   NOT NULL,
    updated_at             BIGINT NOT NULL,
    updated_by             TEXT   NOT NULL DEFAULT ''
);
