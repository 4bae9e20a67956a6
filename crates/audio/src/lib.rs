//! Audio and media files: sniffing, probing, remuxing, encoding and the channel profiles.
