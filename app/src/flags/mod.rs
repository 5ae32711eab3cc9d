//! Command-line parsing with Go `flag` syntax and upstream's `--config` TOML rules, on top of clap derive.
//!
//! Binaries declare an ordinary `#[derive(clap::Parser)]` struct and call
//! [`parse_options`]; this module makes clap behave like Go's `flag` package:
//!
//! * `-name`, `--name`, `-name=value`, `--name=value`, `-name value` and
//!   `--name value` are all the same flag. Parsing stops at `--` or at the
//!   first non-flag argument; what follows is handed to the struct's
//!   positional args if it declares any, and otherwise dropped, as upstream
//!   binaries ignore it.
//! * A plain `bool` field (`#[arg(long)]`, or `#[arg(long, default_value_t =
//!   true)]` for default-on) becomes a Go bool flag: `-name` alone is true,
//!   `-name=false|0|f|F|FALSE|False` (and the true spellings) work, and
//!   `-name false` does not consume `false`. No per-field attributes needed.
//! * A `Vec<String>` field with `#[arg(long)]` is a repeatable list: one value
//!   per occurrence, no comma splitting (add `value_delimiter = ','` where
//!   upstream splits, e.g. `--e2e-processing-latency-percentile`).
//! * A flag given twice keeps the last value, as in Go.
//! * `PathBuf` fields accept an empty value (`-tls-cert=`), as Go strings do.
//! * Any other field that should act like a Go bool flag with extra values
//!   (`--tls-required`, `--tls-required=tcp-https`) declares `num_args = 0..=1,
//!   require_equals = true, default_missing_value = "true"`; such flags never
//!   take the next argument.
//! * `--config=FILE` (a field whose long name is `config`, normally
//!   `config: Option<PathBuf>`) loads TOML; see [`parse_options`] for keys and
//!   precedence.
//! * `--version`/`-version` is handled here: the struct may declare `#[arg(long)]
//!   version: bool` to have it listed under its own help text, otherwise this
//!   module adds it. When true after parsing, [`version_string`] is printed and
//!   the process exits 0, before any config file is read (as upstream does).
//!   clap's own `#[command(version)]` flag is disabled.
//! * Unknown flags and bad values exit 2 with a message and usage hint on
//!   stderr; `-h`, `-help`, `--help` print usage on stdout and exit 0.

mod config_file;
pub mod config_value;
mod go_syntax;

use std::any::TypeId;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command, Parser};

use go_syntax::{CommandLine, Occurrence};

/// Why parsing did not produce options: the process exit code and the text
/// to show. Code 0 (help, version) means the text belongs on stdout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FlagError {
    pub code: i32,
    pub message: String,
}

impl FlagError {
    /// Prints the message where the exit code says it belongs and exits.
    pub fn exit(&self) -> ! {
        if self.code == 0 {
            print!("{}", self.message);
        } else {
            eprint!("{}", self.message);
        }
        std::process::exit(self.code)
    }

    fn usage(cmd: &Command, why: String) -> FlagError {
        let usage = cmd.clone().render_usage();
        FlagError {
            code: 2,
            message: format!("error: {why}\n\n{usage}\n\nFor more information, try '-help'.\n"),
        }
    }

    fn help(cmd: &Command) -> FlagError {
        FlagError {
            code: 0,
            message: go_help(cmd),
        }
    }

    fn from_clap(err: clap::Error) -> FlagError {
        FlagError {
            code: 2,
            message: err.render().to_string(),
        }
    }
}

/// `-h` as Go's flag package lays it out, so it reads like upstream's: the
/// flags sorted by name, each as `--name type` with its text and a
/// non-zero default below (`--n int`, not clap's `--n <N>`; bools bare).
fn go_help(cmd: &Command) -> String {
    let mut out = String::new();
    if let Some(about) = cmd.get_about() {
        out.push_str(&format!("{about}\n\n"));
    }
    let bin = cmd.get_bin_name().unwrap_or(cmd.get_name());
    out.push_str(&format!("Usage of {bin}:\n"));
    let mut args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_long().is_some_and(|l| l != "help"))
        .collect();
    args.sort_by_key(|a| a.get_long());
    for a in args {
        let long = a.get_long().unwrap_or_default();
        let value = a
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let is_bool = a.get_value_parser().type_id() == TypeId::of::<bool>();
        out.push_str(&format!("  --{long}"));
        if !is_bool && !value.is_empty() {
            out.push_str(&format!(" {value}"));
        }
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let default = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",");
        let shown = match default.as_str() {
            "" | "false" | "0" | "0s" => String::new(),
            d if value == "string" => format!(" (default {d:?})"),
            d => format!(" (default {d})"),
        };
        out.push_str(&format!("\n    \t{help}{shown}\n"));
    }
    out
}

/// What `--version` prints; see [`crate::version_string`].
pub fn version_string(prog: &str) -> String {
    crate::version_string(prog)
}

/// Parses `args` (including argv[0]) into `T`, printing and exiting on help,
/// version or error; see the module docs for the syntax.
///
/// `--config=FILE` is TOML whose keys name flags: `_` becomes `-` unless
/// `config_keys` maps the key explicitly, e.g. `("nsqlookupd_tcp_addresses",
/// "lookupd-tcp-address")`. Strings, integers, floats and bools become the
/// flag's value; arrays become one occurrence per element; a bare integer for
/// a [`GoDuration`](crate::GoDuration) option means milliseconds and a string
/// for a list option is split on commas, both as upstream does. A flag on the
/// command line beats the config file (a list given there replaces the file's
/// list entirely), which beats the default. Unknown keys warn on stderr and
/// are ignored; an unreadable or malformed file exits 2.
pub fn parse_options<T: Parser>(
    prog: &str,
    args: impl IntoIterator<Item = OsString>,
    config_keys: &[(&str, &str)],
) -> T {
    let args: Vec<OsString> = args.into_iter().collect();
    crate::docs::serve::<T>(prog, &args);
    try_parse_options(prog, args, config_keys).unwrap_or_else(|err| err.exit())
}

/// [`parse_options`] without printing or exiting, for tests and callers that
/// need to clean up first.
pub fn try_parse_options<T: Parser>(
    prog: &str,
    args: impl IntoIterator<Item = OsString>,
    config_keys: &[(&str, &str)],
) -> Result<T, FlagError> {
    let mut cmd = prepare(T::command(), prog);
    let args: Vec<OsString> = args.into_iter().skip(1).collect();
    let cli = go_syntax::scan(&cmd, &args)?;

    // The command line alone is validated first, as Go's flag.Parse runs
    // before upstream looks at -version or opens the config file.
    let mut matches = clap_parse(&mut cmd, &[], &cli)?;
    if version_requested(&cmd, &matches) {
        return Err(FlagError {
            code: 0,
            message: format!("{}\n", version_string(prog)),
        });
    }

    let config_path = cli.last_value("config").filter(|p| !p.is_empty());
    if let Some(path) = config_path {
        let path = PathBuf::from(path);
        let from_config = config_file::load(&cmd, prog, &path, config_keys, &cli)?;
        if !from_config.is_empty() {
            matches = clap_parse(&mut cmd, &from_config, &cli)?;
        }
    }
    T::from_arg_matches_mut(&mut matches).map_err(FlagError::from_clap)
}

/// Reshapes the derived command into one that accepts what `go_syntax::scan`
/// emits, with Go's semantics for bools, repeats and `--version`.
fn prepare(cmd: Command, prog: &str) -> Command {
    // Only the bin name is set: it is what usage lines show, and renaming the
    // command itself would need clap's `string` feature for no visible gain.
    let mut cmd = cmd
        .bin_name(prog.to_owned())
        .disable_version_flag(true)
        .args_override_self(true);
    if !cmd
        .get_arguments()
        .any(|arg| arg.get_long() == Some("version"))
    {
        cmd = cmd.arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Print version string and exit"),
        );
    }
    let mut cmd = cmd
        .mut_args(go_value_name)
        .mut_args(go_bool)
        .mut_args(empty_paths);
    cmd.build();
    cmd
}

/// Names a flag's value in `-h` as Go's flag package does (`--n int`,
/// `--topic value` for repeatable ones), instead of clap's `--n <N>`.
fn go_value_name(arg: Arg) -> Arg {
    if !arg.get_action().takes_values() || arg.get_long().is_none() {
        return arg;
    }
    let id = arg.get_value_parser().type_id();
    let name = if matches!(arg.get_action(), ArgAction::Append) {
        "value"
    } else if id == TypeId::of::<u64>()
        || id == TypeId::of::<u32>()
        || id == TypeId::of::<u16>()
        || id == TypeId::of::<u8>()
        || id == TypeId::of::<usize>()
        || id == TypeId::of::<i64>()
        || id == TypeId::of::<i32>()
    {
        "int"
    } else if id == TypeId::of::<f64>() {
        "float"
    } else if id == TypeId::of::<crate::GoDuration>() {
        "duration"
    } else if id == TypeId::of::<bool>() {
        "bool"
    } else {
        "string"
    };
    arg.value_name(name)
}

/// Turns a clap `SetTrue` switch into a Go bool flag: still valid bare, but
/// also taking `=value` so `-snappy=false` can turn a default-on flag off.
fn go_bool(arg: Arg) -> Arg {
    if !matches!(arg.get_action(), ArgAction::SetTrue) {
        return arg;
    }
    // SetTrue supplies its implicit `false` default only at build time, and
    // Set does not, so it has to be spelled out here.
    let needs_default = arg.get_default_values().is_empty();
    let arg = arg
        .action(ArgAction::Set)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .value_parser(parse_go_bool);
    if needs_default {
        arg.default_value("false")
    } else {
        arg
    }
}

/// Lets a `PathBuf` flag take an empty value, which clap refuses by default:
/// in Go every path is a plain string, and upstream reads `-config=` or
/// `-tls-cert=` as "not set", so scripts pass them.
fn empty_paths(arg: Arg) -> Arg {
    if arg.get_value_parser().type_id() != TypeId::of::<PathBuf>() {
        return arg;
    }
    arg.value_parser(OsStringValueParser::new().map(PathBuf::from))
}

/// The flags every daemon has besides its own: a config file and
/// `--version` (both read by name by [`parse_options`]).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct StandardFlags {
    /// Path to a TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print version string and exit.
    #[arg(long)]
    pub version: bool,
}

/// `impl Default` for a daemon's options: upstream's defaults, that is the
/// options parsed from a command line that gives no flag.
#[macro_export]
macro_rules! defaults_from_flags {
    ($options:ty, $prog:literal) => {
        impl Default for $options {
            fn default() -> Self {
                <$options as ::clap::Parser>::parse_from([$prog])
            }
        }
    };
}

/// Go's `strconv.ParseBool`, so config files and scripts written for upstream
/// (`-verbose=1`, `snappy = "F"`) keep their meaning.
pub fn parse_go_bool(s: &str) -> Result<bool, BoolError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(BoolError(s.to_owned())),
    }
}

/// A boolean flag value Go's `strconv.ParseBool` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid boolean value {0:?}")]
pub struct BoolError(pub String);

fn version_requested(cmd: &Command, matches: &ArgMatches) -> bool {
    let Some(arg) = cmd
        .get_arguments()
        .find(|arg| arg.get_long() == Some("version"))
    else {
        return false;
    };
    matches!(
        matches.try_get_one::<bool>(arg.get_id().as_str()),
        Ok(Some(true))
    )
}

/// Runs clap over canonical `--name=value` arguments: config occurrences
/// first, then the command line's, then the positional rest after `--`.
fn clap_parse(
    cmd: &mut Command,
    from_config: &[Occurrence],
    cli: &CommandLine,
) -> Result<ArgMatches, FlagError> {
    let mut argv: Vec<OsString> = vec![cmd.get_bin_name().unwrap_or_default().into()];
    argv.extend(
        from_config
            .iter()
            .chain(&cli.flags)
            .map(Occurrence::to_clap_arg),
    );
    if cmd.get_positionals().next().is_some() {
        argv.push("--".into());
        argv.extend(cli.rest.iter().cloned());
    }
    cmd.try_get_matches_from_mut(argv)
        .map_err(FlagError::from_clap)
}

#[cfg(test)]
mod tests;
