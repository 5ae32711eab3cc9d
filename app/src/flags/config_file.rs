//! Turning a `--config` TOML file into flag occurrences that rank below the command line.
//!
//! Config values are fed to clap as if typed as flags, so one value parser per
//! option validates both sources and a binary declares each option once.

use std::any::TypeId;
use std::path::Path;

use clap::{Arg, ArgAction, Command};

use super::go_syntax::{find_flag, CommandLine, Occurrence};
use super::FlagError;
use crate::duration::GoDuration;

/// Flags that steer the parse itself; a config file setting them would be
/// circular (`config`) or pointless (`version`, `help`).
const NOT_FROM_CONFIG: &[&str] = &["config", "version", "help"];

/// Reads `path` and returns occurrences for every option the command line did
/// not already set. Unknown keys only warn because upstream silently skips
/// them and existing config files may carry keys for other versions.
pub(crate) fn load(
    cmd: &Command,
    prog: &str,
    path: &Path,
    config_keys: &[(&str, &str)],
    cli: &CommandLine,
) -> Result<Vec<Occurrence>, FlagError> {
    let failed = |why: String| FlagError {
        code: 2,
        message: format!(
            "{prog}: failed to load config file {} - {why}\n",
            path.display()
        ),
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| failed(e.to_string()))?;

    let mut occurrences = Vec::new();
    for (key, value) in &table {
        let flag = config_keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| key.replace('_', "-"), |(_, flag)| (*flag).to_owned());
        let arg = find_flag(cmd, &flag)
            .filter(|arg| !NOT_FROM_CONFIG.contains(&arg.get_long().unwrap_or_default()));
        let Some(arg) = arg else {
            // Logging is not set up yet (its level is one of these options),
            // so stderr is the only place a warning can go.
            eprintln!(
                "{prog}: ignoring unknown key {key:?} in config file {}",
                path.display()
            );
            continue;
        };
        let long = arg.get_long().unwrap_or_default();
        if cli.has(long) {
            continue;
        }
        let values = config_values(arg, value).map_err(|why| failed(format!("{key}: {why}")))?;
        occurrences.extend(values.into_iter().map(|v| Occurrence {
            long: long.to_owned(),
            value: Some(v.into()),
        }));
    }
    Ok(occurrences)
}

fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// A TOML value no flag can take.
#[derive(Debug, thiserror::Error)]
#[error("nested arrays and tables are not supported")]
struct NestedValue;

/// The flag values one TOML value stands for.
fn config_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, NestedValue> {
    match value {
        toml::Value::Array(items) => items.iter().map(|item| scalar(arg, item)).collect(),
        // Upstream accepts `"a,b"` for a list option as well as an array.
        toml::Value::String(s) if is_list(arg) => Ok(s.split(',').map(str::to_owned).collect()),
        other => Ok(vec![scalar(arg, other)?]),
    }
}

fn scalar(arg: &Arg, value: &toml::Value) -> Result<String, NestedValue> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        // Upstream reads a bare integer for a duration option as milliseconds,
        // so `msg_timeout = 60000` must still mean one minute.
        toml::Value::Integer(n)
            if arg.get_value_parser().type_id() == TypeId::of::<GoDuration>() =>
        {
            format!("{n}ms")
        }
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return Err(NestedValue),
    })
}
