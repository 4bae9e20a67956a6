//! How the process starts media: the gRPC API over the service's database
//! and blob store, the consumer fetching inbound attachments, and the
//! transcode jobs' drain on shutdown. The runner adds the outbox relay and
//! the readiness checks.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use telenet_channels::directory::GrpcChannelDirectory;
use telenet_runtime::{Call, Phase, ServiceContext, Started};

use crate::inbound::InboundFetcher;
use crate::{Config, MediaService, consumers};

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "media";

/// The services it calls (see `telenet_runtime::Call`): ingress, for the
/// channel an inbound attachment is fetched with; and links to the gateway
/// of its own process (download links in the dev server), which it never
/// connects to. Its context refuses any other, and the chart's
/// NetworkPolicies allow these (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[Call::grpc("ingress"), Call::link("gateway")];

/// The service's data directory name in the process's data directory, as
/// the default `blob_dir` (`.telenet/blobs`) spells it.
const DEFAULT_DATA_DIR: &str = ".telenet";

/// Build media, declare the inbound consumer's queue (so no message created
/// from now on is missed, however late the runner starts the consumer) and
/// hand back the gRPC service, the consumer ([`Phase::Consume`]) and the
/// wait for running transcodes ([`Phase::Work`]).
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let mut config = with_blob_dir_in(ctx.config.clone(), &ctx.data_dir);
    local_download_links(&mut config, &ctx)?;
    let media = MediaService::new(ctx.db()?, config)
        .await?
        .with_metrics(ctx.metrics.clone());
    // Channels' files are fetched as their providers authorize it (custom
    // channels: signed with the channel's secret), the channel asked of
    // ingress.
    let channels = GrpcChannelDirectory::new(ctx.client("ingress")?);
    let fetcher = InboundFetcher::new(media.clone(), ctx.bus.clone())?
        .with_channel_directory(Arc::new(channels));
    let messages = consumers::subscribe(&ctx.bus).await?;
    let transcodes = media.clone();
    Ok(Started::new()
        .grpc(media.grpc())
        .task(
            format!("{NAME}.inbound"),
            Phase::Consume,
            move |token| async move {
                consumers::run(fetcher, messages, token).await;
                Ok(())
            },
        )
        .task(
            format!("{NAME}.transcodes"),
            Phase::Work,
            move |token| async move {
                token.cancelled().await;
                transcodes.finish_transcodes().await;
                Ok(())
            },
        ))
}

/// With the gateway in this process on a loopback address (the dev server)
/// and no download links configured, links point at that gateway, signed
/// with a key kept in the data directory, so they survive restarts.
fn local_download_links<C>(config: &mut Config, ctx: &ServiceContext<C>) -> anyhow::Result<()> {
    if config.download_urls != Default::default() {
        return Ok(());
    }
    let Some(gateway) = ctx
        .http_addr_of("gateway")?
        .filter(|a| a.ip().is_loopback())
    else {
        return Ok(());
    };
    config.download_urls.base_url = format!("http://{gateway}");
    config.download_urls.key = local_link_key(&ctx.data_dir)?;
    Ok(())
}

/// The download-link key of a single-process installation: read from
/// `download-link.key` in the data directory, made (random, readable by the
/// owner only) on first start.
fn local_link_key(data_dir: &Path) -> anyhow::Result<String> {
    use telenet_signing::links::LinkSigner;
    let path = data_dir.join("download-link.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_owned();
        if LinkSigner::new::<&str>(&key, &[]).is_ok() {
            return Ok(key);
        }
        tracing::warn!(path = %path.display(), "unusable download-link key; making a new one");
    }
    let key = LinkSigner::generate_key()
        .map_err(|e| anyhow::anyhow!("generating a download-link key: {e}"))?;
    telenet_kit::fs::write_private(&path, key.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// `config` with a relative `blob_dir` placed in `data_dir`: the default
/// `.telenet/blobs` becomes `<data_dir>/blobs`, any other relative path
/// `<data_dir>/<path>`.
fn with_blob_dir_in(mut config: Config, data_dir: &Path) -> Config {
    if config.blob_dir.is_relative() {
        let relative = config
            .blob_dir
            .strip_prefix(DEFAULT_DATA_DIR)
            .unwrap_or(&config.blob_dir);
        config.blob_dir = data_dir.join(relative);
    }
    config
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn relative_blob_dirs_go_in_the_data_dir() {
        let data = Path::new("/var/lib/telenet");
        let blob_dir = |dir: &str| {
            with_blob_dir_in(
                Config {
                    blob_dir: PathBuf::from(dir),
                    ..Config::default()
                },
                data,
            )
            .blob_dir
        };
        assert_eq!(
            with_blob_dir_in(Config::default(), data).blob_dir,
            data.join("blobs")
        );
        assert_eq!(blob_dir("files/blobs"), data.join("files/blobs"));
        assert_eq!(blob_dir("/srv/blobs"), PathBuf::from("/srv/blobs"));
    }
}
