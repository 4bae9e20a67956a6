//! telenet-tests
