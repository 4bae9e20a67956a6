//! Bus handlers of contacts. Contacts consumes no events yet: it announces
//! `contact.created` through its outbox and answers over gRPC. The activity
//! log's conversation events (PRODUCT.md, contacts: activity) are handled
//! here, subscribed in [`crate::start`] before it returns.
