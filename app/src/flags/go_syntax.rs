//! Scanning argv by the rules of Go's `flag` package, which upstream's users and client test suites rely on.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use super::FlagError;

/// One flag occurrence, named by its canonical long name so that config
/// precedence can compare it with config keys whatever alias was typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub long: String,
    /// `None` for a bool-style flag given bare (`-snappy`), so clap applies
    /// the arg's `default_missing_value`.
    pub value: Option<OsString>,
}

impl Occurrence {
    /// Always the attached `--name=value` form: clap then never has to guess
    /// whether a value starting with `-` is a value or the next flag, which is
    /// exactly the ambiguity Go resolves differently from clap.
    pub fn to_clap_arg(&self) -> OsString {
        let mut arg = OsString::from(format!("--{}", self.long));
        if let Some(value) = &self.value {
            arg.push("=");
            arg.push(value);
        }
        arg
    }
}

/// The command line split the way Go splits it.
#[derive(Debug, Default)]
pub(crate) struct CommandLine {
    pub flags: Vec<Occurrence>,
    /// Everything from the first non-flag argument on (a `--` terminator is
    /// consumed, not kept).
    pub rest: Vec<OsString>,
}

impl CommandLine {
    pub fn has(&self, long: &str) -> bool {
        self.flags.iter().any(|o| o.long == long)
    }

    /// Last value given for `long`, as Go keeps only the last `Set`.
    pub fn last_value(&self, long: &str) -> Option<&OsString> {
        self.flags
            .iter()
            .rev()
            .find(|o| o.long == long)
            .and_then(|o| o.value.as_ref())
    }
}

/// A flag that may stand alone or take `=value` but never consumes the next
/// argument: Go's "bool flag" (`IsBoolFlag`), which `prepare` makes of every
/// `bool` field and which tri-state flags like `--tls-required` opt into with
/// `num_args = 0..=1`.
pub(crate) fn is_bool_style(arg: &Arg) -> bool {
    arg.get_action().takes_values() && arg.get_num_args().is_some_and(|r| r.min_values() == 0)
}

/// Finds the arg a Go-style flag name refers to. clap's own help arg is left
/// out so `-h`/`-help` fall through to the usage path, as in Go where they are
/// only special when the program defines no such flag.
pub(crate) fn find_flag<'c>(cmd: &'c Command, name: &str) -> Option<&'c Arg> {
    cmd.get_arguments().find(|arg| {
        !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong
        ) && (arg.get_long() == Some(name)
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name)))
    })
}

/// Splits `args` (without argv[0]) into flag occurrences and the rest, with
/// Go's rules: `-name` and `--name` are the same flag; a non-bool flag without
/// `=value` takes the next argument whatever it looks like; a bool flag never
/// does; scanning stops at `--` or the first argument that is not a flag.
pub(crate) fn scan(cmd: &Command, args: &[OsString]) -> Result<CommandLine, FlagError> {
    let mut line = CommandLine::default();
    let mut i = 0;
    while i < args.len() {
        let Some(text) = args[i].to_str() else {
            if args[i].as_encoded_bytes().first() == Some(&b'-') {
                return Err(FlagError::usage(
                    cmd,
                    format!("bad flag syntax: {}", args[i].to_string_lossy()),
                ));
            }
            break;
        };
        if text.len() < 2 || !text.starts_with('-') {
            break;
        }
        i += 1;
        let mut name = &text[1..];
        if let Some(after_second_dash) = name.strip_prefix('-') {
            if after_second_dash.is_empty() {
                break;
            }
            name = after_second_dash;
        }
        if name.starts_with('-') || name.starts_with('=') {
            return Err(FlagError::usage(cmd, format!("bad flag syntax: {text}")));
        }
        let (name, inline) = match name.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (name, None),
        };

        let Some(arg) = find_flag(cmd, name) else {
            if name == "h" || name == "help" {
                return Err(FlagError::help(cmd));
            }
            return Err(FlagError::usage(
                cmd,
                format!("flag provided but not defined: -{name}"),
            ));
        };
        let long = arg
            .get_long()
            .expect("find_flag only matches args with a long name")
            .to_owned();
        let value = if is_bool_style(arg) {
            inline.map(OsString::from)
        } else if !arg.get_action().takes_values() {
            if inline.is_some() {
                return Err(FlagError::usage(
                    cmd,
                    format!("flag -{name} does not take a value"),
                ));
            }
            None
        } else if let Some(value) = inline {
            Some(OsString::from(value))
        } else if let Some(next) = args.get(i) {
            i += 1;
            Some(next.clone())
        } else {
            return Err(FlagError::usage(
                cmd,
                format!("flag needs an argument: -{name}"),
            ));
        };
        line.flags.push(Occurrence { long, value });
    }
    line.rest = args[i..].to_vec();
    Ok(line)
}
