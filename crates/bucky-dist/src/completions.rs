//! Shell completions (bash, zsh, fish) for the three programs, named as each shell's vendor directory
//! expects: bash-completion loads `completions/NAME`, zsh `_NAME`, fish `NAME.fish`.

use std::fs;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::programs::PROGRAMS;

/// A shell's completion file name for a program.
type FileName = fn(&str) -> String;

/// The shells, their subdirectory of the output and the file name for a program.
const SHELLS: &[(Shell, &str, FileName)] = &[
    (Shell::Bash, "bash", |name| name.to_owned()),
    (Shell::Zsh, "zsh", |name| format!("_{name}")),
    (Shell::Fish, "fish", |name| format!("{name}.fish")),
];

/// Writes every program's completions for every shell under `dir`; returns the files written.
pub(crate) fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, subdir, file_name) in SHELLS {
        let shell_dir = dir.join(subdir);
        fs::create_dir_all(&shell_dir)?;
        for program in PROGRAMS {
            let mut command = (program.command)();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, program.name, &mut script);
            let path = shell_dir.join(file_name(program.name));
            fs::write(&path, script)?;
            written.push(path);
        }
    }
    Ok(written)
}
