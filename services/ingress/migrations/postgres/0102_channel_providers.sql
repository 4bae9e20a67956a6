-- Channels of every provider (docs/channels/): which provider a channel
-- runs through, its provider settings, and how it is doing.
--
-- `config` holds the provider settings (telenet.ingress.v1.ChannelConfig,
-- secrets included) sealed like `secret`: under the key `secret_key`
-- names, bound to its row and to the field `config`; empty for custom
-- channels, whose settings are the columns above. `provider` is
-- telenet.common.v1.ChannelProvider (0: a custom channel stored before
-- providers were recorded).
ALTER TABLE channels ADD COLUMN provider BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN config TEXT NOT NULL DEFAULT '';
-- telenet.ingress.v1.ChannelStatus and why (for people).
ALTER TABLE channels ADD COLUMN status BIGINT NOT NULL DEFAULT 1;
ALTER TABLE channels ADD COLUMN status_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- Health, written at most once a minute per channel and kind of news:
-- the last verified webhook, the last refused one (and why), the last
-- send dispatch made (and its error, empty when it was sent).
ALTER TABLE channels ADD COLUMN last_webhook_at BIGINT;
ALTER TABLE channels ADD COLUMN last_rejected_webhook_at BIGINT;
ALTER TABLE channels ADD COLUMN last_rejection TEXT NOT NULL DEFAULT '';
ALTER TABLE channels ADD COLUMN last_send_at BIGINT;
ALTER TABLE channels ADD COLUMN last_send_error TEXT NOT NULL DEFAULT '';
