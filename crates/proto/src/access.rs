//! Which methods of the v1 API platform clients may call (docs/security.md).
//!
//! TELENET's own services may call every method, for any workspace. A
//! platform client (another team's service, authenticated by a secret) may
//! call a method whose request names a workspace (field 1,
//! `workspace_id`) for the workspaces it is allowed, except the methods
//! below; a method whose request names no workspace is closed to it unless
//! listed in [`OPEN_TO_PLATFORM_CLIENTS`]. A new method is classified here
//! when its request has no `workspace_id` in field 1, or when its answer
//! carries a credential.

/// Methods reserved to TELENET's services: they create workspaces, turn or
/// mint tokens, answer with a secret (a channel's signing secret or
/// provider credentials), or operate the whole installation (the event
/// bus's dead letters, of every workspace).
pub const INTERNAL_ONLY: &[&str] = &[
    "/telenet.conversations.v1.Members/CreateWorkspace",
    "/telenet.conversations.v1.Members/Authenticate",
    "/telenet.conversations.v1.Members/CreateToken",
    "/telenet.ingress.v1.Channels/CreateChannel",
    "/telenet.ingress.v1.Channels/ConnectChannel",
    "/telenet.ingress.v1.Channels/RotateChannelSecret",
    "/telenet.ingress.v1.Channels/GetChannelCredentials",
    "/telenet.ingress.v1.Channels/GetChannelConfig",
    // Operating the bus: an empty workspace acts on every workspace's dead
    // letters; the gateway calls them for its caller's workspace only.
    "/telenet.operations.v1.DeadLetters/ListDeadLetters",
    "/telenet.operations.v1.DeadLetters/RedriveDeadLetters",
    "/telenet.operations.v1.DeadLetters/DiscardDeadLetters",
];

/// Methods whose request names no workspace and that tell nothing about
/// any: catalogs the same for everyone.
pub const OPEN_TO_PLATFORM_CLIENTS: &[&str] = &[
    "/telenet.ingress.v1.Channels/ListChannelKinds",
    "/telenet.media.v1.Media/ListProfiles",
];
