//! Bus handlers of ingress: none. Ingress takes its input from providers'
//! webhooks (the `webhook` module) and only publishes; should it ever
//! consume (e.g. to update a channel's status from `outbound.status`), the
//! handlers go here, subscribed in [`crate::start`] before it returns.
