//! Man pages: one per program and, as clap_mangen names them, one per subcommand (`bucky-rebalance.1`,
//! `bucky-whisper-create.1`), each ending with a SEE ALSO section that links the others (and a FILES
//! section for the daemons' configuration).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap_mangen::Man;

use crate::programs::{Program, PROGRAMS};

/// Writes every page into `dir/man<section>/`, dated `date` (YYYY-MM-DD); returns the files written.
pub(crate) fn write_all(dir: &Path, date: String) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for program in PROGRAMS {
        let section_dir = dir.join(format!("man{}", program.section));
        fs::create_dir_all(&section_dir)?;
        let mut command = (program.command)().disable_help_subcommand(true);
        command.build();
        let source = match command.get_version() {
            Some(version) => format!("{} {version}", program.name),
            None => program.name.to_owned(),
        };
        let page = Page { program, source: &source, date: &date, dir: &section_dir };
        page.write_tree(&command, None, &mut written)?;
    }
    Ok(written)
}

/// What every page of one program shares.
struct Page<'a> {
    program: &'a Program,
    /// The footer's source: `bucky 0.1.0` on every page of bucky, subcommands included.
    source: &'a str,
    /// The footer's date. Never empty: clap_mangen writes an empty date as nothing at all, which shifts
    /// the source and manual into the wrong fields of `.TH`.
    date: &'a str,
    dir: &'a Path,
}

impl Page<'_> {
    /// The page of `command` (a subcommand of `parent`), then those of its visible subcommands, recursively.
    fn write_tree(
        &self,
        command: &clap::Command,
        parent: Option<&str>,
        written: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let man = Man::new(command.clone())
            .section(self.program.section)
            .source(self.source)
            .date(self.date)
            .manual(if self.program.section == "8" { "System Administration" } else { "User Commands" });
        let path = self.dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)?;
        if display_name(command) == self.program.name {
            write_files_section(self.program, &mut page)?;
        }
        write_see_also(self.program, command, parent, &mut page)?;
        fs::write(&path, page)?;
        written.push(path);
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            self.write_tree(sub, Some(display_name(command)), written)?;
        }
        Ok(())
    }
}

/// `bucky-whisper-create` for `bucky whisper create` (set by `Command::build`), the name it is filed under.
fn display_name(command: &clap::Command) -> &str {
    command.get_display_name().unwrap_or(command.get_name())
}

fn write_files_section(program: &Program, page: &mut Vec<u8>) -> std::io::Result<()> {
    if program.files.is_empty() {
        return Ok(());
    }
    writeln!(page, ".SH FILES")?;
    for (path, text) in program.files {
        writeln!(page, ".TP\n.I {}\n{}", roff_escape(path), roff_escape(text))?;
    }
    Ok(())
}

/// Links the parent page, the subcommands' pages and the other programs.
fn write_see_also(
    program: &Program,
    command: &clap::Command,
    parent: Option<&str>,
    page: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut refs: Vec<(&str, &str)> = Vec::new();
    if let Some(parent) = parent {
        refs.push((parent, program.section));
    }
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        refs.push((display_name(sub), program.section));
    }
    for other in PROGRAMS.iter().filter(|other| other.name != program.name) {
        refs.push((other.name, other.section));
    }
    writeln!(page, ".SH \"SEE ALSO\"")?;
    let last = refs.len().saturating_sub(1);
    for (i, (name, section)) in refs.iter().enumerate() {
        let comma = if i == last { "" } else { "," };
        writeln!(page, ".BR {} ({}){}", roff_escape(name), section, comma)?;
    }
    Ok(())
}

/// Escapes text for a roff line: backslashes, and a leading `.` or `'` (which would start a request).
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Checks a `--date`: YYYY-MM-DD.
pub(crate) fn parse_date(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('-').collect();
    let well_formed = matches!(parts.as_slice(), [y, m, d]
        if y.len() == 4 && m.len() == 2 && d.len() == 2
            && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())));
    if well_formed {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a date as YYYY-MM-DD"))
    }
}

/// Today's date in UTC, YYYY-MM-DD.
pub(crate) fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (bucky-wire's calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let date = bucky_wire::UtcTime::from_unix(days * 86_400);
    (date.year, date.month, date.day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(-1), (1969, 12, 31));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
