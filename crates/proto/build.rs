//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic services into `OUT_DIR`, plus one encoded
//! descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("telenet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The v1 protos describe the whole API; RPCs a service does not
    // implement yet answer UNIMPLEMENTED through the generated defaults.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    std::fs::write(
        out.join("event_routing.rs"),
        routing_keys(&std::fs::read_to_string(
            root.join("telenet/events/v1/events.proto"),
        )?)?,
    )?;
    Ok(())
}

/// The routing key of every `EventEnvelope.payload` case is written in the
/// proto, as a comment `// \`area.event\`` right above the field; generate
/// `Payload::routing_key` from it so the proto stays the one source.
fn routing_keys(proto: &str) -> Result<String, Box<dyn std::error::Error>> {
    let block = proto
        .split_once("oneof payload {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(block, _)| block)
        .ok_or("events.proto: no `oneof payload` in EventEnvelope")?;
    let mut arms = String::new();
    let mut key: Option<String> = None;
    for line in block.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix("//") {
            let comment = comment.trim();
            if let Some(k) = comment.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
                key = Some(k.to_owned());
            }
        } else if let Some(field) = line.split_whitespace().nth(1) {
            let k = key.take().ok_or_else(|| {
                format!("events.proto: payload field `{field}` has no routing-key comment")
            })?;
            let variant: String = field
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            arms.push_str(&format!("            Payload::{variant}(_) => \"{k}\",\n"));
        }
    }
    Ok(format!(
        "impl event_envelope::Payload {{\n    /// The routing key (`<area>.<event>`) this case is published under.\n    pub fn routing_key(&self) -> &'static str {{\n        use event_envelope::Payload;\n        match self {{\n{arms}        }}\n    }}\n}}\n"
    ))
}

fn collect(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
