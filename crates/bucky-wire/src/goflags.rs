//! buckytools' Go command lines: Go's `flag` package spells long flags with one dash (`-host x`,
//! `-workers=10`), which clap would read as a cluster of short flags (`-h ost`). Shared by `bucky` and
//! `bucky-agent` so unit files and scripts written for buckytools keep working.

use std::ffi::OsString;

/// Rewrites Go-style single-dash long flags (`-host x`, `-workers=10`, `-delete`, `-noconfirm`) into clap's
/// `--host`, so scripts written for buckytools' `bucky` keep working. Without this, clap would read `-host
/// x` as `-h ost x`. The long names and aliases of the subcommand being invoked are rewritten, and so are
/// those of any other subcommand (`list -noconfirm` becomes `list --noconfirm`, which clap rejects by its
/// name, rather than as `-n` of a cluster `-n -o -c …`); single letters, short-flag clusters (`-rf`), values
/// and anything after `--` are left alone.
pub fn go_style_args(command: &clap::Command, args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut current = command;
    let mut after_separator = false;
    let mut out = Vec::new();
    for (position, arg) in args.into_iter().enumerate() {
        let text = match arg.to_str() {
            Some(text) if position > 0 && !after_separator => text,
            _ => {
                out.push(arg);
                continue;
            }
        };
        if text == "--" {
            after_separator = true;
        } else if let Some(sub) = current.find_subcommand(text) {
            current = sub;
        } else if let Some(rest) = text.strip_prefix('-').filter(|rest| !rest.starts_with('-')) {
            let name = rest.split('=').next().unwrap_or_default();
            let is_long = |a: &clap::Arg| {
                a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&name))
            };
            let known = current.get_arguments().any(is_long) || name == "help" || name == "version";
            if name.len() > 1 && (known || long_anywhere(command, &is_long)) {
                out.push(OsString::from(format!("-{text}")));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

/// Whether any (sub)command of `command` has a long flag or alias `is_long` accepts.
fn long_anywhere(command: &clap::Command, is_long: &impl Fn(&clap::Arg) -> bool) -> bool {
    command.get_arguments().any(is_long) || command.get_subcommands().any(|sub| long_anywhere(sub, is_long))
}
