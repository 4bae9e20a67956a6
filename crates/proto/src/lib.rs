//! Generated protobuf messages and gRPC services of the TELENET v1 API.
//!
//! The sources are in `proto/` at the workspace root; `build.rs` compiles them
//! with protox, so no system `protoc` is needed.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every TELENET proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/telenet_descriptor.bin"));

pub mod telenet {
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.common.v1.rs"));
        }
    }
    pub mod events {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.events.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/event_routing.rs"));
        }
    }
    pub mod ingress {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.ingress.v1.rs"));
        }
    }
    pub mod conversations {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.conversations.v1.rs"));
        }
    }
    pub mod contacts {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.contacts.v1.rs"));
        }
    }
    pub mod media {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.media.v1.rs"));
        }
    }
    pub mod dispatch {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.dispatch.v1.rs"));
        }
    }
    pub mod operations {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.operations.v1.rs"));
        }
    }
    pub mod reporting {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/telenet.reporting.v1.rs"));
        }
    }
}

pub mod access;

pub use telenet::{
    common, contacts, conversations, dispatch, events, ingress, media, operations, reporting,
};

// `Debug` of the messages that carry secrets: whether each secret is set,
// never its value (build.rs, `redacted_debug`).
include!(concat!(env!("OUT_DIR"), "/redacted_debug.rs"));
