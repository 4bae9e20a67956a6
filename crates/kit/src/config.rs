//! Layered configuration: defaults → optional TOML file → `TELENET_…`
//! environment → overrides (usually command-line flags).
//!
//! Every service describes its configuration as one `serde` struct whose
//! `Default` is the dev-server default, so `telenet dev` needs no file and no
//! environment at all. Production settings come from the environment
//! (Kubernetes), a file is there for local experiments, and flags win last.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     gateway: Gateway,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Gateway {
//!     listen: std::net::SocketAddr,
//! }
//!
//! impl Default for Gateway {
//!     fn default() -> Self {
//!         Self { listen: ([127, 0, 0, 1], 8080).into() }
//!     }
//! }
//!
//! // Flags: `None` means "not given", so it does not override anything.
//! #[derive(Serialize)]
//! struct Flags {
//!     #[serde(rename = "gateway.listen")]
//!     listen: Option<String>,
//! }
//!
//! let env = [("TELENET_GATEWAY__LISTEN".to_owned(), "0.0.0.0:9000".to_owned())];
//! let config: Config =
//!     telenet_kit::config::load_with_env(None, Flags { listen: None }, env)?;
//! assert_eq!(config.gateway.listen.port(), 9000);
//! # Ok::<(), telenet_kit::config::ConfigError>(())
//! ```
//!
//! # Environment
//!
//! `TELENET_GATEWAY__LISTEN=0.0.0.0:8080` sets `gateway.listen`: the prefix is
//! stripped, the rest is lowercased and `__` separates nesting levels. Values
//! are read as strings (so an all-digit password stays a string) and converted
//! to numbers or booleans only where the target field asks for one; values
//! written as `[a, b]` or `{ k = v }` become lists and tables.
//!
//! Only variables whose *top-level* key is a field of the configuration type
//! are read. Other `TELENET_…` variables belong to someone else — the log
//! filter `TELENET_LOG`, test knobs like `TELENET_TEST_*` — and must not make
//! a service refuse to start. The known fields are taken from the type's
//! `Deserialize` impl (and from serializing its default), so a misspelt
//! *top-level* name is ignored while a misspelt nested name
//! (`TELENET_GATEWAY__LISTN`) is rejected by `deny_unknown_fields`.
//!
//! # Overrides
//!
//! `overrides` is anything serializable to a map: `None`/`null` values are
//! dropped, and keys containing dots (`"gateway.listen"`) are expanded into
//! nested tables, so a flat clap struct can override nested keys. Pass `()`
//! for no overrides.
//!
//! # Errors
//!
//! An error names the exact key and where its value came from, e.g.
//! ``config key `gateway.listen`: invalid socket address syntax (from env TELENET_GATEWAY__LISTEN)``.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::error::{Kind, OneOf};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefix of every environment variable read as configuration.
pub const ENV_PREFIX: &str = "TELENET_";

/// Separator between nesting levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

const DEFAULTS: &str = "defaults";
const FILE: &str = "config file";
const ENV: &str = "environment";
const OVERRIDES: &str = "overrides";

/// Loads `T` from defaults, `file`, the process environment and `overrides`,
/// later layers winning. See the [module docs](self) for the rules.
pub fn load<T>(file: Option<&Path>, overrides: impl Serialize) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    // `std::env::vars()` panics on non-UTF-8 variables; such variables cannot
    // be ours, so they are skipped rather than allowed to crash the service.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_with_env(file, overrides, env)
}

/// Like [`load`], but reads the given variables instead of the process
/// environment. Tests use it because changing the real environment is
/// `unsafe` (and racy) in a multi-threaded test binary; the dev server can use
/// it to inject settings.
pub fn load_with_env<T, I>(
    file: Option<&Path>,
    overrides: impl Serialize,
    env: I,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let known = known_top_level_keys::<T>();
    let mut figment = Figment::from(Named::new(
        Serialized::defaults(T::default()),
        Metadata::named(DEFAULTS),
    ));

    if let Some(path) = file {
        // Read the file ourselves: figment silently treats a missing file as
        // empty, and an explicitly named file that is missing is a mistake.
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
        })?;
        figment = figment.merge(Named::new(
            Toml::string(&text),
            Metadata::named(FILE).source(path),
        ));
    }

    let env = EnvLayer::new(env, &known);
    figment = figment.merge(&env);

    let overrides = overrides_to_value(overrides)?;
    figment = figment.merge(Named::new(
        Serialized::defaults(overrides),
        Metadata::named(OVERRIDES),
    ));

    // Lossy extraction turns the env layer's strings into numbers and
    // booleans where the field wants one (see `EnvLayer`).
    figment
        .extract_lossy::<T>()
        .map_err(|error| ConfigError::Invalid(issues(error, &figment, &env)))
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named on the command line could not be read.
    #[error("config file `{}` cannot be read: {source}", path.display())]
    File {
        /// The path as given.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The overrides could not be turned into a map of keys.
    #[error("config overrides are invalid: {0}")]
    Overrides(String),
    /// One or more keys have invalid values, are unknown or are missing.
    #[error("{}", display_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The individual problems, empty unless this is [`ConfigError::Invalid`].
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}

fn display_issues(issues: &[ConfigIssue]) -> String {
    let parts: Vec<String> = issues.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// One wrong key: which, what is wrong and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `gateway.listen`; empty for whole-file problems
    /// such as TOML syntax errors.
    pub key: String,
    /// Lowercase description of the problem.
    pub message: String,
    /// The layer that supplied the offending value.
    pub origin: Origin,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)?;
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)?;
        }
        match &self.origin {
            Origin::Unknown => Ok(()),
            origin => write!(f, " ({origin})"),
        }
    }
}

/// The configuration layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `T::default()`.
    Defaults,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// The overrides (command-line flags).
    Overrides,
    /// Not known, e.g. for a key that is missing everywhere.
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("from defaults"),
            Origin::File(path) => write!(f, "from file {}", path.display()),
            Origin::Env(var) => write!(f, "from env {var}"),
            Origin::Overrides => f.write_str("from command-line overrides"),
            Origin::Unknown => f.write_str("origin unknown"),
        }
    }
}

/// A provider with metadata we control, so errors can be attributed to a
/// layer by name.
struct Named<P> {
    inner: P,
    metadata: Metadata,
}

impl<P> Named<P> {
    fn new(inner: P, metadata: Metadata) -> Self {
        Self { inner, metadata }
    }
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }

    fn profile(&self) -> Option<Profile> {
        self.inner.profile()
    }
}

/// The `TELENET_…` layer, built from an explicit list of variables so it can
/// be tested without touching the process environment, and remembering which
/// variable set which key for error messages.
struct EnvLayer {
    dict: Dict,
    /// Key path → variable name, in the order the variables were applied.
    sources: Vec<(Vec<String>, String)>,
}

impl EnvLayer {
    fn new(vars: impl IntoIterator<Item = (String, String)>, known: &BTreeSet<String>) -> Self {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        // Sorted so `TELENET_A` is applied before `TELENET_A__B`: the more
        // specific variable wins regardless of environment order.
        vars.sort();

        let mut layer = EnvLayer {
            dict: Dict::new(),
            sources: Vec::new(),
        };
        for (name, raw) in vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .split(ENV_SEPARATOR)
                .map(str::to_owned)
                .collect();
            if path.iter().any(String::is_empty) {
                tracing::debug!(variable = %name, "ignoring malformed config variable");
                continue;
            }
            if !path.first().is_some_and(|top| known.contains(top)) {
                continue;
            }
            insert_path(&mut layer.dict, &path, env_value(&raw));
            layer.sources.push((path, name));
        }
        layer
    }

    /// The variable that supplied `path` (or the closest enclosing table).
    fn variable_for(&self, path: &[String]) -> Option<&str> {
        self.sources
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, name)| name.as_str())
    }
}

impl Provider for &EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Keeps lists and tables structured but leaves scalars as strings: figment
/// would otherwise turn `TELENET_DB__PASSWORD=123456` into a number and then
/// refuse it for a `String` field. Lossy extraction converts back to numbers
/// and booleans where the field asks for them.
fn env_value(raw: &str) -> Value {
    let parsed: Value = match raw.parse() {
        Ok(value) => value,
        Err(never) => match never {},
    };
    match parsed {
        Value::Array(..) | Value::Dict(..) | Value::String(..) => parsed,
        _ => Value::from(raw.to_owned()),
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = dict;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// Serializes overrides to a JSON object without `null`s, expanding dotted
/// keys into nested objects.
fn overrides_to_value(overrides: impl Serialize) -> Result<serde_json::Value, ConfigError> {
    use serde_json::Value as Json;
    let value =
        serde_json::to_value(overrides).map_err(|e| ConfigError::Overrides(e.to_string()))?;
    match value {
        Json::Null => Ok(Json::Object(serde_json::Map::new())),
        Json::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                let Some(value) = strip_nulls(value) else {
                    continue;
                };
                let path: Vec<&str> = key.split('.').collect();
                if path.iter().any(|segment| segment.is_empty()) {
                    return Err(ConfigError::Overrides(format!("malformed key `{key}`")));
                }
                insert_json_path(&mut out, &path, value);
            }
            Ok(Json::Object(out))
        }
        other => Err(ConfigError::Overrides(format!(
            "expected a map of keys, found {}",
            json_kind(&other)
        ))),
    }
}

fn strip_nulls(value: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    match value {
        Json::Null => None,
        Json::Object(map) => {
            let map: serde_json::Map<_, _> = map
                .into_iter()
                .filter_map(|(k, v)| Some((k, strip_nulls(v)?)))
                .collect();
            // An object emptied by stripping said nothing; keeping it would
            // turn an absent `Option<Table>` into `Some(default)`.
            (!map.is_empty()).then_some(Json::Object(map))
        }
        other => Some(other),
    }
}

fn insert_json_path(
    map: &mut serde_json::Map<String, serde_json::Value>,
    path: &[&str],
    value: serde_json::Value,
) {
    use serde_json::Value as Json;
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = map;
    for key in parents {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Json::Object(serde_json::Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(serde_json::Map::new());
        }
        let Json::Object(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert((*last).to_owned(), value);
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

/// Turns figment's error chain into issues naming key and origin.
fn issues(error: figment::Error, figment: &Figment, env: &EnvLayer) -> Vec<ConfigIssue> {
    error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            let message = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    if expected.is_empty() {
                        "unknown key".to_owned()
                    } else {
                        format!("unknown key, expected {}", OneOf(expected))
                    }
                }
                Kind::MissingField(field) => {
                    path.push(field.to_string());
                    "missing required key".to_owned()
                }
                other => other.to_string(),
            };
            let key = path.join(".");
            let metadata = e.metadata.as_ref().or_else(|| {
                (!key.is_empty())
                    .then(|| figment.find_metadata(&key))
                    .flatten()
            });
            ConfigIssue {
                origin: origin_of(metadata, &path, env),
                key,
                message,
            }
        })
        .collect()
}

fn origin_of(metadata: Option<&Metadata>, path: &[String], env: &EnvLayer) -> Origin {
    let Some(metadata) = metadata else {
        return Origin::Unknown;
    };
    match metadata.name.as_ref() {
        DEFAULTS => Origin::Defaults,
        FILE => metadata
            .source
            .as_ref()
            .and_then(|source| source.file_path())
            .map_or(Origin::Unknown, |path| Origin::File(path.to_owned())),
        ENV => Origin::Env(
            env.variable_for(path)
                .map_or_else(|| env_name_for(path), str::to_owned),
        ),
        OVERRIDES => Origin::Overrides,
        _ => Origin::Unknown,
    }
}

/// The variable that would set `path`, e.g. `TELENET_GATEWAY__LISTEN`.
pub fn env_name_for<S: AsRef<str>>(path: &[S]) -> String {
    let keys: Vec<String> = path
        .iter()
        .map(|k| k.as_ref().to_ascii_uppercase())
        .collect();
    format!("{ENV_PREFIX}{}", keys.join(ENV_SEPARATOR))
}

/// Top-level keys of `T`: the field names its `Deserialize` impl announces
/// (which include `Option` fields that serialize to nothing) plus the keys of
/// its serialized default (which cover `#[serde(flatten)]`).
fn known_top_level_keys<T: DeserializeOwned + Serialize + Default>() -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = struct_fields::<T>()
        .unwrap_or_default()
        .iter()
        .map(|field| (*field).to_owned())
        .collect();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(T::default()) {
        keys.extend(map.into_iter().map(|(k, _)| k));
    }
    keys
}

/// Asks `T`'s `Deserialize` impl for its field list without any input: a
/// derived impl passes the list to `deserialize_struct`, which we record and
/// then abort.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("field probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("field probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `serde` helpers for `std::time::Duration` written with a unit, like
/// `30s`, `250ms`, `5m` or `1h`, so timeouts read naturally in TOML and env:
/// `#[serde(with = "telenet_kit::config::duration")]`.
///
/// A bare number is rejected on purpose: `30` could mean seconds or
/// milliseconds, and guessing wrong is a silent outage.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    const EXPECTED: &str = "a duration with a unit, like `30s`, `250ms`, `5m` or `1h`";

    /// Serializes as the shortest exact form, e.g. `1500ms`, `30s`.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*duration))
    }

    /// Deserializes from a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
                parse(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }

    /// Parses `<integer><unit>` with unit `ns`, `us`, `ms`, `s`, `m`, `h` or
    /// `d`; `0` alone is accepted too.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Duration::ZERO);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let invalid = || format!("invalid duration `{text}`, expected {EXPECTED}");
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let seconds = |factor: u64| {
            number
                .checked_mul(factor)
                .map(Duration::from_secs)
                .ok_or_else(invalid)
        };
        match unit.trim() {
            "ns" => Ok(Duration::from_nanos(number)),
            "us" | "µs" => Ok(Duration::from_micros(number)),
            "ms" => Ok(Duration::from_millis(number)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86_400),
            _ => Err(invalid()),
        }
    }

    /// Formats with the largest unit that represents `duration` exactly.
    pub fn format(duration: Duration) -> String {
        let nanos = duration.as_nanos();
        if nanos == 0 {
            return "0s".to_owned();
        }
        const UNITS: [(u128, &str); 6] = [
            (86_400_000_000_000, "d"),
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        for (size, unit) in UNITS {
            if nanos % size == 0 {
                return format!("{}{unit}", nanos / size);
            }
        }
        format!("{nanos}ns")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        name: String,
        workers: u16,
        debug: bool,
        password: Option<String>,
        gateway: Gateway,
    }

    impl Default for Config {
        fn default() -> Self {
            Self {
                name: "dev".into(),
                workers: 4,
                debug: false,
                password: None,
                gateway: Gateway::default(),
            }
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Gateway {
        listen: SocketAddr,
        #[serde(with = "duration")]
        timeout: Duration,
        origins: Vec<String>,
    }

    impl Default for Gateway {
        fn default() -> Self {
            Self {
                listen: ([127, 0, 0, 1], 8080).into(),
                timeout: Duration::from_secs(30),
                origins: Vec::new(),
            }
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    }

    #[test]
    fn defaults_alone() {
        let config: Config = load_with_env(None, (), env(&[])).expect("defaults load");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let file = toml_file(
            r#"
            name = "from-file"
            workers = 8
            [gateway]
            listen = "127.0.0.1:1000"
            timeout = "5s"
            "#,
        );
        let vars = env(&[
            ("TELENET_WORKERS", "16"),
            ("TELENET_DEBUG", "true"),
            ("TELENET_GATEWAY__LISTEN", "127.0.0.1:2000"),
            ("TELENET_GATEWAY__ORIGINS", "[\"a.test\", \"b.test\"]"),
        ]);
        let overrides =
            BTreeMap::from([("gateway.listen", Some("127.0.0.1:3000")), ("name", None)]);
        let config: Config =
            load_with_env(Some(file.path()), overrides, vars).expect("layers load");
        assert_eq!(
            config.name, "from-file",
            "a `None` override must not replace the file value"
        );
        assert_eq!(config.workers, 16, "env beats file");
        assert!(config.debug);
        assert_eq!(config.gateway.listen.port(), 3000, "overrides beat env");
        assert_eq!(config.gateway.timeout, Duration::from_secs(5));
        assert_eq!(config.gateway.origins, vec!["a.test", "b.test"]);
    }

    #[test]
    fn digit_only_env_value_stays_a_string() {
        let config: Config = load_with_env(None, (), env(&[("TELENET_PASSWORD", "123456")]))
            .expect("password loads");
        assert_eq!(config.password.as_deref(), Some("123456"));
    }

    #[test]
    fn foreign_telenet_variables_are_ignored() {
        let vars = env(&[
            ("TELENET_TEST_DATABASE_URL", "postgres://x"),
            ("TELENET_LOG", "debug"),
            ("TELENET_", "x"),
            ("TELENET_GATEWAY____LISTEN", "x"),
            ("OTHER_NAME", "x"),
        ]);
        let config: Config = load_with_env(None, (), vars).expect("foreign variables ignored");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn invalid_env_value_names_key_and_variable() {
        let err = load_with_env::<Config, _>(None, (), env(&[("TELENET_GATEWAY__LISTEN", "nope")]))
            .expect_err("invalid address");
        let text = err.to_string();
        assert!(text.contains("config key `gateway.listen`"), "{text}");
        assert!(text.contains("invalid socket address"), "{text}");
        assert!(
            text.contains("(from env TELENET_GATEWAY__LISTEN)"),
            "{text}"
        );
        assert_eq!(
            err.issues()[0].origin,
            Origin::Env("TELENET_GATEWAY__LISTEN".into())
        );
    }

    #[test]
    fn wrongly_typed_file_value_names_key_and_file() {
        let file = toml_file("workers = \"many\"\n");
        let err =
            load_with_env::<Config, _>(Some(file.path()), (), env(&[])).expect_err("wrong type");
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "workers");
        assert_eq!(issue.origin, Origin::File(file.path().to_owned()));
        assert!(issue.message.contains("invalid type"), "{}", issue.message);
    }

    #[test]
    fn wrongly_typed_env_value_names_key_and_variable() {
        let err = load_with_env::<Config, _>(None, (), env(&[("TELENET_WORKERS", "many")]))
            .expect_err("wrong type");
        let text = err.to_string();
        assert!(text.contains("config key `workers`"), "{text}");
        assert!(text.contains("TELENET_WORKERS"), "{text}");
    }

    #[test]
    fn unknown_nested_key_is_rejected_and_named() {
        let err =
            load_with_env::<Config, _>(None, (), env(&[("TELENET_GATEWAY__LISTN", "127.0.0.1:1")]))
                .expect_err("unknown key");
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "gateway.listn");
        assert!(
            issue.message.starts_with("unknown key"),
            "{}",
            issue.message
        );
        assert_eq!(issue.origin, Origin::Env("TELENET_GATEWAY__LISTN".into()));
        assert!(
            err.to_string().contains("`listen`"),
            "expected keys are listed: {err}"
        );
    }

    #[test]
    fn unknown_file_key_is_rejected_and_named() {
        let file = toml_file("[gateway]\nlistn = \"127.0.0.1:1\"\n");
        let err =
            load_with_env::<Config, _>(Some(file.path()), (), env(&[])).expect_err("unknown key");
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "gateway.listn");
        assert_eq!(issue.origin, Origin::File(file.path().to_owned()));
    }

    #[test]
    fn invalid_override_names_overrides() {
        let overrides = BTreeMap::from([("gateway.timeout", "30")]);
        let err =
            load_with_env::<Config, _>(None, overrides, env(&[])).expect_err("unitless duration");
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "gateway.timeout");
        assert_eq!(issue.origin, Origin::Overrides);
        assert!(
            issue.message.contains("invalid duration `30`"),
            "{}",
            issue.message
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err =
            load_with_env::<Config, _>(Some(Path::new("/nonexistent/telenet.toml")), (), env(&[]))
                .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/telenet.toml"),
            "{err}"
        );
    }

    #[test]
    fn toml_syntax_error_names_file() {
        let file = toml_file("workers = [1\n");
        let err =
            load_with_env::<Config, _>(Some(file.path()), (), env(&[])).expect_err("bad toml");
        assert_eq!(err.issues()[0].origin, Origin::File(file.path().to_owned()));
    }

    #[test]
    fn non_map_overrides_are_rejected() {
        let err = load_with_env::<Config, _>(None, 5, env(&[])).expect_err("number is not a map");
        assert!(matches!(err, ConfigError::Overrides(_)));
    }

    #[test]
    fn struct_overrides_skip_none_fields() {
        #[derive(Serialize)]
        struct Flags {
            workers: Option<u16>,
            gateway: Option<GatewayFlags>,
        }
        #[derive(Serialize)]
        struct GatewayFlags {
            listen: Option<String>,
        }
        let flags = Flags {
            workers: None,
            gateway: Some(GatewayFlags { listen: None }),
        };
        let config: Config =
            load_with_env(None, flags, env(&[("TELENET_WORKERS", "7")])).expect("flags load");
        assert_eq!(config.workers, 7);
        assert_eq!(config.gateway, Gateway::default());
    }

    #[test]
    fn known_keys_include_option_fields() {
        let keys = known_top_level_keys::<Config>();
        for key in ["name", "workers", "debug", "password", "gateway"] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn env_name_matches_reader() {
        assert_eq!(
            env_name_for(&["gateway", "listen"]),
            "TELENET_GATEWAY__LISTEN"
        );
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration::parse("0"), Ok(Duration::ZERO));
        assert!(duration::parse("30").is_err());
        assert!(duration::parse("s").is_err());
        assert!(duration::parse("10 parsecs").is_err());
        assert!(duration::parse("99999999999999999999d").is_err());
        assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration::format(Duration::from_secs(3600)), "1h");
        assert_eq!(duration::format(Duration::from_nanos(7)), "7ns");
    }
}
