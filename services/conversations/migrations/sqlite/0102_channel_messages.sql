-- What real channels bring: when the contact last wrote (reply windows),
-- shared locations, quoted messages, kinds TELENET does not show, edits,
-- unsends and reactions (the latest emoji of each contact, one protobuf
-- blob per message, like attachments). Empty blobs and strings: none.
ALTER TABLE conversations ADD COLUMN last_inbound_at INTEGER;
ALTER TABLE messages ADD COLUMN location BLOB NOT NULL DEFAULT x'';
ALTER TABLE messages ADD COLUMN reply_to_message_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN unsupported_type TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN reactions BLOB NOT NULL DEFAULT x'';
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN unsent_at INTEGER;
-- Watermark statuses: a contact's replies on a channel up to a time.
CREATE INDEX messages_by_channel ON messages (workspace_id, channel_id, direction, created_at);
-- Conversations before this: the contact last wrote with their latest message.
UPDATE conversations SET last_inbound_at = (
    SELECT MAX(m.created_at) FROM messages m
    WHERE m.conversation_id = conversations.id AND m.direction = 1
);
