//! Messaging channels, one module per provider.
