//! `--config dnd.toml`: settings kept in a file, under the same names as
//! the command line's flags (`server-port = 6001`, or `server_port`).
//!
//! Owns the translation of such a file into the flags it stands for, given
//! the command line's own description (`clap::Command`), so that every
//! flag can be set in the file and every value goes through the flag's own
//! checks. A flag given on the command line or through its `DND_*`
//! variable wins over the file. Unknown names and values of the wrong kind
//! are refused with the name; a file is never half-applied. Reads one file
//! once; it never looks at anything else.

use std::ffi::OsString;
use std::path::Path;

use clap::ArgAction;

/// The largest settings file read.
pub const MAX_SETTINGS_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("settings file {path} is larger than {MAX_SETTINGS_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("settings file {path} is not TOML: {reason}")]
    NotToml { path: String, reason: String },
    #[error("settings file {path}: `{name}` is no flag of dnd (see dnd --help)")]
    Unknown { path: String, name: String },
    #[error("settings file {path}: `{name}` {expected}")]
    WrongKind {
        path: String,
        name: String,
        expected: &'static str,
    },
}

/// The flags `path` stands for, to go before the command line's own, less
/// those the command line (`given`, without the program name) or the
/// environment already sets.
pub fn flags_from_file(
    path: &Path,
    command: &clap::Command,
    given: &[OsString],
) -> Result<Vec<OsString>, SettingsFileError> {
    let shown = path.display().to_string();
    let read_error = |source| SettingsFileError::Read {
        path: shown.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_SETTINGS_FILE_BYTES {
        return Err(SettingsFileError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    flags_from_text(&text, &shown, command, given, |name| {
        std::env::var_os(name).is_some()
    })
}

/// [`flags_from_file`] on the file's text; `in_env` says whether a
/// variable is set.
pub fn flags_from_text(
    text: &str,
    path: &str,
    command: &clap::Command,
    given: &[OsString],
    in_env: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, SettingsFileError> {
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| SettingsFileError::NotToml {
                path: path.into(),
                reason: e.message().to_string(),
            })?;
    let mut flags = Vec::new();
    for (name, value) in &table {
        let long = name.replace('_', "-");
        if long == "config" {
            return Err(SettingsFileError::WrongKind {
                path: path.into(),
                name: name.clone(),
                expected: "cannot name another settings file",
            });
        }
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(SettingsFileError::Unknown {
                path: path.into(),
                name: name.clone(),
            });
        };
        let wrong = |expected| SettingsFileError::WrongKind {
            path: path.into(),
            name: name.clone(),
            expected,
        };
        if on_command_line(arg, given)
            || arg.get_env().is_some_and(|v| in_env(&v.to_string_lossy()))
        {
            continue;
        }
        let flag = format!("--{long}");
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value {
                toml::Value::Boolean(true) => flags.push(flag.into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(wrong("takes true or false")),
            },
            ArgAction::Count => match value.as_integer() {
                Some(n @ 0..=8) => flags.extend((0..n).map(|_| OsString::from(&flag))),
                _ => return Err(wrong("takes a count from 0 to 8")),
            },
            ArgAction::Append => {
                let items = match value {
                    toml::Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for item in items {
                    let text = scalar(item).ok_or_else(|| wrong("takes values, not tables"))?;
                    flags.push(format!("{flag}={text}").into());
                }
            }
            _ => {
                let text = scalar(value).ok_or_else(|| wrong("takes one value"))?;
                flags.push(format!("{flag}={text}").into());
            }
        }
    }
    Ok(flags)
}

/// A value as the command line would spell it.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `given` names the flag, long (`--name`, `--name=value`, an alias)
/// or short (`-p`, `-p5000`, `-vv`).
fn on_command_line(arg: &clap::Arg, given: &[OsString]) -> bool {
    let longs: Vec<&str> = arg
        .get_long()
        .into_iter()
        .chain(arg.get_all_aliases().into_iter().flatten())
        .collect();
    let short = arg.get_short();
    given
        .iter()
        .take_while(|word| *word != "--")
        .filter_map(|word| word.to_str())
        .any(|word| {
            if let Some(rest) = word.strip_prefix("--") {
                let name = rest.split('=').next().unwrap_or(rest);
                return longs.contains(&name);
            }
            match (word.strip_prefix('-'), short) {
                (Some(shorts), Some(short)) => shorts.starts_with(short),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("dnd")
            .arg(Arg::new("config").long("config"))
            .arg(
                Arg::new("server_port")
                    .long("server-port")
                    .env("DND_SERVER_PORT"),
            )
            .arg(Arg::new("port").short('p').long("port"))
            .arg(
                Arg::new("address")
                    .long("address")
                    .visible_alias("advertise"),
            )
            .arg(
                Arg::new("insecure")
                    .long("insecure")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("verbose")
                    .short('v')
                    .long("verbose")
                    .action(ArgAction::Count),
            )
            .arg(Arg::new("seed").long("seed").action(ArgAction::Append))
    }

    fn flags(text: &str, given: &[&str], env: &[&str]) -> Result<Vec<String>, SettingsFileError> {
        let given: Vec<OsString> = given.iter().map(OsString::from).collect();
        flags_from_text(text, "dnd.toml", &command(), &given, |v| env.contains(&v)).map(|f| {
            f.into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn every_kind_of_flag_is_spelled_as_on_the_command_line() {
        let text = "server_port = 6001\nport = 5001\naddress = \"10.0.0.1\"\ninsecure = true\nverbose = 2\nseed = [\"a:1\", \"b:2\"]\n";
        let found = flags(text, &[], &[]).unwrap();
        assert_eq!(
            found,
            [
                "--address=10.0.0.1",
                "--insecure",
                "--port=5001",
                "--seed=a:1",
                "--seed=b:2",
                "--server-port=6001",
                "--verbose",
                "--verbose",
            ]
        );
        assert_eq!(
            flags("insecure = false", &[], &[]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_command_line_and_the_environment_win_over_the_file() {
        let text = "server-port = 6001\nport = 5001\naddress = \"10.0.0.1\"\nverbose = 1";
        assert_eq!(
            flags(
                text,
                &[
                    "--server-port=7000",
                    "-p5",
                    "--advertise",
                    "x",
                    "-vv",
                    "start"
                ],
                &[]
            )
            .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            flags(text, &["start"], &["DND_SERVER_PORT"]).unwrap(),
            ["--address=10.0.0.1", "--port=5001", "--verbose"]
        );
        // After `--`, words are another program's.
        assert_eq!(
            flags("port = 5001", &["dev", "--", "--port", "1"], &[]).unwrap(),
            ["--port=5001"]
        );
    }

    #[test]
    fn unknown_names_and_wrong_kinds_are_refused_with_the_name() {
        let unknown = flags("prot = 5001", &[], &[]).unwrap_err().to_string();
        assert!(unknown.contains("`prot` is no flag"), "{unknown}");
        let nested = flags("config = \"x\"", &[], &[]).unwrap_err().to_string();
        assert!(
            nested.contains("cannot name another settings file"),
            "{nested}"
        );
        let wrong = flags("insecure = \"yes\"", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("`insecure` takes true or false"), "{wrong}");
        assert!(flags("port = { a = 1 }", &[], &[]).is_err());
        assert!(flags("verbose = 99", &[], &[]).is_err());
        let broken = flags("port = ", &[], &[]).unwrap_err().to_string();
        assert!(broken.contains("not TOML"), "{broken}");
    }
}
