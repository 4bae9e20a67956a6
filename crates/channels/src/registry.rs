//! Which provider serves which kind of channel.

use std::sync::Arc;

use telenet_proto::common::v1::ChannelKind;

use crate::Provider;

/// The providers of this build, by channel kind. Clones share them.
#[derive(Clone)]
pub struct Registry {
    /// Sorted by kind, one per kind.
    providers: Arc<Vec<Arc<dyn Provider>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
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
        Self::empty().with(Arc::new(crate::custom::Custom))
    }

    /// No providers (tests add their own).
    pub fn empty() -> Self {
        Self {
            providers: Arc::new(Vec::new()),
        }
    }

    /// With `provider`, replacing any other of its kind.
    pub fn with(self, provider: Arc<dyn Provider>) -> Self {
        let mut providers: Vec<_> = self
            .providers
            .iter()
            .filter(|p| p.kind() != provider.kind())
            .cloned()
            .collect();
        providers.push(provider);
        providers.sort_by_key(|p| p.kind());
        Self {
            providers: Arc::new(providers),
        }
    }

    /// The provider of channels of `kind`, if this build has one.
    pub fn get(&self, kind: ChannelKind) -> Option<&dyn Provider> {
        self.providers
            .iter()
            .find(|p| p.kind() == kind)
            .map(|p| p.as_ref())
    }

    /// The kinds served, in the proto's order.
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
            registry.get(ChannelKind::Custom).map(|p| p.kind()),
            Some(ChannelKind::Custom)
        );
        assert!(registry.get(ChannelKind::Whatsapp).is_none());
        assert!(registry.get(ChannelKind::Unspecified).is_none());
        assert_eq!(registry.kinds().collect::<Vec<_>>(), [ChannelKind::Custom]);
        assert!(Registry::empty().get(ChannelKind::Custom).is_none());
    }
}
