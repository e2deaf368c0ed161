//! Where relay settings come from, and which wins: **flags, then `POSTERN_*` environment
//! variables, then the TOML config file, then the declared defaults.**
//!
//! Each layer is reduced to the values it gives, by setting; for every setting the highest
//! layer that gives one wins, and the winners are parsed once, by the same clap definition, so
//! a value means the same thing whichever layer it came from. File keys are the settings'
//! field names; a key that is no setting is an error, except `[[policy]]` and `[[oidc]]`
//! tables, the settings only a file can hold. A list setting (`allow_domains`) comes whole from one layer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};

use super::{ConfigError, RelayConfig};
use crate::access::policy::PolicySpec;
use crate::access::Policies;

/// The clap definition of the settings; `with_env` keeps clap's own reading of `POSTERN_*`
/// (for `--help`, which lists them), without it the loader reads the environment itself.
pub(super) fn command(with_env: bool) -> Command {
    let cmd = RelayConfig::augment_args(Command::new("postern-server"));
    if with_env {
        cmd
    } else {
        cmd.mut_args(|a| a.env(None::<&'static str>))
    }
}

/// Values of settings, by setting (the field name), as one layer gives them.
pub type Values = HashMap<String, Vec<OsString>>;

/// The sources of a relay's settings, highest precedence first.
pub struct Layers<'a> {
    /// What the command line gave.
    pub flags: Values,
    /// Reads an environment variable (`std::env::var_os`, or a map in tests).
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    /// The config file: its name, for messages, and its TOML text.
    pub file: Option<(String, String)>,
}

impl std::fmt::Debug for Layers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers").field("flags", &self.flags.keys()).field("file", &self.file).finish()
    }
}

impl Layers<'_> {
    /// The values typed on a command line that `matches` parsed (a command that flattens
    /// [`RelayConfig`]); values clap took from the environment or from defaults are left out.
    pub fn flags_from(matches: &ArgMatches) -> Values {
        let mut flags = Values::new();
        for arg in command(false).get_arguments() {
            let id = arg.get_id().as_str();
            if matches.try_get_raw(id).is_ok() && matches.value_source(id) == Some(ValueSource::CommandLine) {
                if let Ok(Some(raw)) = matches.try_get_raw(id) {
                    flags.insert(id.to_string(), raw.map(OsString::from).collect());
                }
            }
        }
        flags
    }

    /// The values of a command line given as arguments (`--domain x --tcp-ports 0`).
    pub fn flags_from_args<I, T>(args: I) -> Result<Values, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv = std::iter::once(OsString::from("postern-server")).chain(args.into_iter().map(Into::into));
        let matches = command(false).try_get_matches_from(argv).map_err(|e| parse_error("command line", e))?;
        Ok(Self::flags_from(&matches))
    }
}

fn parse_error(source_name: &str, e: impl std::fmt::Display) -> ConfigError {
    let message = e.to_string().trim().trim_start_matches("error: ").to_string();
    ConfigError::Parse { source_name: source_name.to_string(), message }
}

/// A config file: its setting values and its policies.
struct FileLayer {
    name: String,
    values: Values,
    policies: Vec<PolicySpec>,
    oidc: Vec<crate::visitor::OidcSpec>,
}

fn read_file(name: &str, text: &str) -> Result<FileLayer, ConfigError> {
    let source = format!("config file {name}");
    let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(&source, e))?;
    let settings = command(false);
    let mut layer = FileLayer { name: name.to_string(), values: Values::new(), policies: Vec::new(), oidc: Vec::new() };
    for (key, value) in table {
        if key == "policy" {
            layer.policies = value.try_into().map_err(|e| parse_error(&source, format!("[[policy]]: {e}")))?;
            continue;
        }
        if key == "oidc" {
            layer.oidc = value.try_into().map_err(|e| parse_error(&source, format!("[[oidc]]: {e}")))?;
            continue;
        }
        if !settings.get_arguments().any(|a| a.get_id().as_str() == key) {
            return Err(ConfigError::UnknownKey { file: name.to_string(), key });
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(OsString::from(s)),
            toml::Value::Integer(i) => Some(i.to_string().into()),
            toml::Value::Float(f) => Some(f.to_string().into()),
            toml::Value::Boolean(b) => Some(b.to_string().into()),
            _ => None,
        };
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            v => scalar(v).map(|s| vec![s]),
        };
        let values =
            values.ok_or_else(|| parse_error(&source, format!("{key}: expected a string, number or boolean")))?;
        layer.values.insert(key, values);
    }
    Ok(layer)
}

/// Parses the chosen values; every other setting takes its default.
fn parse(values: &Values, source_name: &str) -> Result<RelayConfig, ConfigError> {
    let cmd = command(false);
    let mut argv = vec![OsString::from("postern-server")];
    for arg in cmd.get_arguments() {
        let (Some(long), Some(vals)) = (arg.get_long(), values.get(arg.get_id().as_str())) else { continue };
        for v in vals {
            let mut one = OsString::from(format!("--{long}="));
            one.push(v);
            argv.push(one);
        }
    }
    let matches = cmd.try_get_matches_from(argv).map_err(|e| parse_error(source_name, e))?;
    RelayConfig::from_arg_matches(&matches).map_err(|e| parse_error(source_name, e))
}

impl RelayConfig {
    /// Merges `layers` over the defaults. Reads nothing but the layers: no state directory, no
    /// key file. See [`RelayConfig::load`] for the relay's full start-up.
    pub fn from_layers(layers: &Layers<'_>) -> Result<Self, ConfigError> {
        let file = match &layers.file {
            Some((name, text)) => Some(read_file(name, text)?),
            None => None,
        };
        if let Some(f) = &file {
            // A bad value in the file is reported as the file's, before it is merged.
            parse(&f.values, &format!("config file {}", f.name))?;
        }
        let with_env = command(true);
        let mut chosen = Values::new();
        for arg in with_env.get_arguments() {
            let id = arg.get_id().as_str().to_string();
            let from_env = || {
                let var = arg.get_env()?.to_str()?;
                let v = (layers.env)(var).filter(|v| !v.is_empty())?;
                Some(vec![v])
            };
            let value = layers
                .flags
                .get(&id)
                .cloned()
                .or_else(from_env)
                .or_else(|| file.as_ref().and_then(|f| f.values.get(&id).cloned()));
            if let Some(v) = value {
                chosen.insert(id, v);
            }
        }
        let mut config = parse(&chosen, "command line or environment")?;
        if let Some(f) = file {
            let list = f.policies.iter().map(PolicySpec::to_policy).collect::<Result<Vec<_>, _>>();
            config.policies = Policies::new(list.map_err(|e| parse_error(&format!("config file {}", f.name), e))?);
            config.oidc = f.oidc;
        }
        config.token = config.token.filter(|t| !t.expose().is_empty());
        config.admin_token = config.admin_token.filter(|t| !t.expose().is_empty());
        Ok(config)
    }

    /// The relay's start-up: merges `layers`, settles the state directory (`--state-dir`, else
    /// `$STATE_DIRECTORY`, else `./postern-state`), loads the token signing key (`--token-key`,
    /// else `token.key` there, created if missing), names a clustered relay after its host,
    /// and validates the result.
    pub fn load(layers: &Layers<'_>) -> Result<Self, ConfigError> {
        let mut config = Self::from_layers(layers)?;
        let state_dir = config
            .state_dir
            .clone()
            .or_else(|| (layers.env)("STATE_DIRECTORY").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("postern-state"));
        let key = match &config.token_key_file {
            Some(file) => crate::keys::load(file),
            None => crate::keys::load_or_create(&state_dir),
        };
        let key = key.map_err(|e| ConfigError::Io(format!("loading the token signing key: {e}")))?;
        if config.cluster.is_some() && config.relay_id.is_none() {
            config.relay_id = Some(host_name());
        }
        config.token_key = Some(key);
        config.state_dir = Some(state_dir);
        config.validate()?;
        Ok(config)
    }
}

/// This machine's host name as a DNS label (a relay's default id in a cluster).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let first = raw.trim().split('.').next().unwrap_or_default().to_ascii_lowercase();
    let label: String = first.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "relay".into()
    } else {
        label
    }
}
