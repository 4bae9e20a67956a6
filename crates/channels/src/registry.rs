//! Which provider serves which channel.

use std::sync::Arc;

use telenet_proto::common::v1::{ChannelKind, ChannelProvider};

use crate::{ChannelCredentials, Provider};

/// The providers of this build, by [`ChannelProvider`]. Clones share them.
#[derive(Clone)]
pub struct Registry {
    /// Sorted by provider, one per provider.
    providers: Arc<Vec<Arc<dyn Provider>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.providers()).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every provider this build has.
    pub fn builtin() -> Self {
        Self::empty()
            .with(Arc::new(crate::custom::Custom))
            .with(Arc::new(crate::telegram::Telegram))
            .with(Arc::new(crate::line::Line))
            .with(Arc::new(crate::viber::Viber))
            .with(Arc::new(crate::messenger::Messenger))
            .with(Arc::new(crate::instagram::Instagram))
            .with(Arc::new(crate::whatsapp::WhatsAppCloud))
            .with(Arc::new(crate::whatsapp::dialog360::WhatsApp360Dialog))
    }

    /// No providers (tests add their own).
    pub fn empty() -> Self {
        Self {
            providers: Arc::new(Vec::new()),
        }
    }

    /// With `provider`, replacing any other serving the same provider.
    pub fn with(self, provider: Arc<dyn Provider>) -> Self {
        let mut providers: Vec<_> = self
            .providers
            .iter()
            .filter(|p| p.provider() != provider.provider())
            .cloned()
            .collect();
        providers.push(provider);
        providers.sort_by_key(|p| p.provider());
        Self {
            providers: Arc::new(providers),
        }
    }

    /// The implementation of `provider`, if this build has one.
    pub fn get(&self, provider: ChannelProvider) -> Option<&dyn Provider> {
        self.providers
            .iter()
            .find(|p| p.provider() == provider)
            .map(|p| p.as_ref())
    }

    /// The provider serving `channel`: its recorded provider, or, for a
    /// channel stored before providers were recorded, the one provider of
    /// its kind.
    pub fn for_channel(&self, channel: &ChannelCredentials) -> Option<&dyn Provider> {
        if channel.provider != ChannelProvider::Unspecified {
            return self.get(channel.provider);
        }
        let mut of_kind = self.providers.iter().filter(|p| p.kind() == channel.kind);
        match (of_kind.next(), of_kind.next()) {
            (Some(only), None) => Some(only.as_ref()),
            _ => None,
        }
    }

    /// The providers served, in the proto's order.
    pub fn providers(&self) -> impl Iterator<Item = ChannelProvider> + '_ {
        self.providers.iter().map(|p| p.provider())
    }

    /// The kinds served, in the proto's order of their providers (a kind
    /// served by several providers is listed once per provider).
    pub fn kinds(&self) -> impl Iterator<Item = ChannelKind> + '_ {
        self.providers.iter().map(|p| p.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_custom_channel_is_built_in() {
        let registry = Registry::builtin();
        assert_eq!(
            registry.get(ChannelProvider::Custom).map(|p| p.kind()),
            Some(ChannelKind::Custom)
        );
        assert!(registry.get(ChannelProvider::Unspecified).is_none());
        assert!(Registry::empty().get(ChannelProvider::Custom).is_none());
    }

    #[test]
    fn channels_stored_before_providers_were_recorded_find_their_kinds_provider() {
        let registry = Registry::builtin();
        let legacy = ChannelCredentials {
            kind: ChannelKind::Custom,
            ..Default::default()
        };
        assert_eq!(
            registry.for_channel(&legacy).map(|p| p.provider()),
            Some(ChannelProvider::Custom)
        );
        let unknown = ChannelCredentials {
            kind: ChannelKind::Wechat,
            ..Default::default()
        };
        assert!(registry.for_channel(&unknown).is_none());
    }
}
