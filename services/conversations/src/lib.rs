//! telenet-conversations
