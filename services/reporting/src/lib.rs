//! telenet-reporting
