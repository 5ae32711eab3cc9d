//! Man pages and shell completions generated from a binary's own clap `Command`, for packaging.
//!
//! Every binary answers two hidden requests when one is its only argument:
//! `--generate-man` prints a roff man page, `--generate-completion=SHELL`
//! (bash, zsh, fish, elvish, powershell) a completion script. They are
//! only recognised alone, so they can never change what an upstream command
//! line means; `scripts/deb.sh` runs them to fill the package.

use std::ffi::OsString;
use std::io::Write;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// What a lone argument asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocRequest {
    Man,
    Completion(Shell),
}

/// The request in `args` (argv\[0\] first), if its only argument is one.
pub fn requested(args: &[OsString]) -> Option<DocRequest> {
    let [_, arg] = args else { return None };
    let arg = arg.to_str()?;
    if arg == "--generate-man" {
        return Some(DocRequest::Man);
    }
    let shell = arg.strip_prefix("--generate-completion=")?;
    shell.parse::<Shell>().ok().map(DocRequest::Completion)
}

/// One line per binary for the man page's NAME section (the options
/// structs' doc comments speak to developers).
const ABOUT: &[(&str, &str)] = &[
    (
        "nsqd",
        "the NSQ daemon: receives, queues and delivers messages",
    ),
    (
        "nsqlookupd",
        "the NSQ discovery daemon: which nsqd has which topics",
    ),
    ("nsqadmin", "web UI to watch and administer an NSQ cluster"),
    ("to_nsq", "publish records read from stdin to an NSQ topic"),
    ("nsq_tail", "print the messages of an NSQ topic"),
    (
        "nsq_stat",
        "poll and print an NSQ channel's rates and depths",
    ),
    (
        "nsq_to_file",
        "write the messages of NSQ topics to rotating files",
    ),
    ("nsq-job", "submit, run and watch sharded jobs on nsq-rs"),
];

/// Render `request` for `cmd`, named `prog` (the installed binary's name).
pub fn render(request: DocRequest, cmd: Command, prog: &str) -> std::io::Result<Vec<u8>> {
    // clap names are `'static` without its `string` feature; this runs once,
    // right before the process exits.
    let name: &'static str = Box::leak(prog.to_owned().into_boxed_str());
    let mut cmd = cmd
        .name(name)
        .bin_name(name)
        .version(crate::VERSION)
        .disable_version_flag(true);
    // As parsing adds it (see `flags`): `--version` is always accepted.
    if !cmd.get_arguments().any(|a| a.get_long() == Some("version")) {
        cmd = cmd.arg(
            clap::Arg::new("version")
                .long("version")
                .action(clap::ArgAction::SetTrue)
                .help("Print version string and exit"),
        );
    }
    if let Some((_, about)) = ABOUT.iter().find(|(p, _)| *p == prog) {
        cmd = cmd.about(*about);
    }
    let mut out = Vec::new();
    match request {
        DocRequest::Man => clap_mangen::Man::new(cmd).render(&mut out)?,
        DocRequest::Completion(shell) => {
            clap_complete::generate(shell, &mut cmd, prog.to_owned(), &mut out)
        }
    }
    Ok(out)
}

/// If `args` is a documentation request, print it for `T` and exit 0.
/// Binaries that parse with clap directly call this first; the ones using
/// [`crate::flags::parse_options`] get it from there.
pub fn serve<T: CommandFactory>(prog: &str, args: &[OsString]) {
    let Some(request) = requested(args) else {
        return;
    };
    match render(request, T::command(), prog) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&text);
            let _ = stdout.flush();
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Demo {
        /// where to listen
        #[arg(long, default_value = "0.0.0.0:4150")]
        tcp_address: String,
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_a_lone_argument_is_a_request() {
        assert_eq!(
            requested(&args(&["x", "--generate-man"])),
            Some(DocRequest::Man)
        );
        assert_eq!(
            requested(&args(&["x", "--generate-completion=bash"])),
            Some(DocRequest::Completion(Shell::Bash))
        );
        assert_eq!(requested(&args(&["x", "--generate-completion=cmd"])), None);
        assert_eq!(requested(&args(&["x", "--generate-man", "-v"])), None);
        assert_eq!(requested(&args(&["x"])), None);
    }

    #[test]
    fn man_pages_and_completions_name_the_flags() {
        let man = render(DocRequest::Man, Demo::command(), "nsqd").unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains(".TH nsqd"), "{man}");
        assert!(man.contains("the NSQ daemon"), "{man}");
        assert!(man.contains("\\-\\-version"), "{man}");
        assert!(man.contains("tcp\\-address"), "{man}");
        let bash = render(DocRequest::Completion(Shell::Bash), Demo::command(), "nsqd").unwrap();
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("--tcp-address"), "{bash}");
        assert!(bash.contains("_nsqd()"), "{bash}");
    }
}
