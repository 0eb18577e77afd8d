//! The generated files cover every program, subcommand and flag of the clap definitions, and link only
//! to pages that exist.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command as Process;

use crate::programs::PROGRAMS;

/// Every visible command of `command`'s tree, as (page name, command).
fn visible_tree(command: &clap::Command) -> Vec<(String, clap::Command)> {
    let mut out = vec![(command.get_display_name().unwrap_or(command.get_name()).to_owned(), command.clone())];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        out.extend(visible_tree(sub));
    }
    out
}

fn built(program: &crate::programs::Program) -> clap::Command {
    let mut command = (program.command)().disable_help_subcommand(true);
    command.build();
    command
}

#[test]
fn every_command_has_a_page_listing_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let written = crate::man::write_all(dir.path(), "2026-01-02".into()).unwrap();
    let mut pages = 0;
    for program in PROGRAMS {
        for (name, command) in visible_tree(&built(program)) {
            let path = dir.path().join(format!("man{}/{name}.{}", program.section, program.section));
            let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            pages += 1;
            assert!(page.contains(&format!(".TH {name} {} 2026-01-02 \"{} ", program.section, program.name)), "{name}");
            for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let spelled = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&spelled), "{name}: no {spelled} in {}", path.display());
                }
            }
        }
    }
    assert_eq!(written.len(), pages, "one page per visible command, nothing else");
    assert!(pages > 30, "bucky's subcommands have their pages: {pages}");
    let agent = std::fs::read_to_string(dir.path().join("man8/bucky-agent.8")).unwrap();
    assert!(!agent.contains("test\\-publish"), "hidden flags stay out of the page");
    assert!(agent.contains("/etc/default/bucky\\-agent"), "the daemon's page names its default file");
}

#[test]
fn see_also_links_only_pages_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let written = crate::man::write_all(dir.path(), "2026-01-02".into()).unwrap();
    let existing: BTreeSet<String> =
        written.iter().map(|path| path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for path in &written {
        let page = std::fs::read_to_string(path).unwrap();
        let see_also = page.split(".SH \"SEE ALSO\"").nth(1).expect("a SEE ALSO section");
        let links: Vec<&str> = see_also.lines().filter_map(|line| line.strip_prefix(".BR ")).collect();
        assert!(!links.is_empty(), "{}", path.display());
        for link in links {
            let (name, section) = link.split_once(" (").unwrap();
            let section = section.trim_end_matches(',').trim_end_matches(')');
            let file = format!("{}.{section}", name.replace("\\-", "-"));
            assert!(existing.contains(&file), "{} links {file}, which is not generated", path.display());
        }
    }
}

#[test]
fn completions_cover_every_subcommand_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    let written = crate::completions::write_all(dir.path()).unwrap();
    assert_eq!(written.len(), 9, "3 shells x 3 programs");
    for program in PROGRAMS {
        for shell_file in
            [format!("bash/{}", program.name), format!("zsh/_{}", program.name), format!("fish/{}.fish", program.name)]
        {
            let script = std::fs::read_to_string(dir.path().join(&shell_file)).unwrap();
            for sub in built(program).get_subcommands().filter(|sub| !sub.is_hide_set()) {
                assert!(script.contains(sub.get_name()), "{shell_file} lacks {}", sub.get_name());
            }
            for arg in (program.command)().get_arguments().filter(|arg| !arg.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(script.contains(long), "{shell_file} lacks --{long}");
                }
            }
        }
        syntax_check("bash", &dir.path().join(format!("bash/{}", program.name)));
        syntax_check("zsh", &dir.path().join(format!("zsh/_{}", program.name)));
        syntax_check("fish", &dir.path().join(format!("fish/{}.fish", program.name)));
    }
}

/// `SHELL -n FILE` when that shell is installed (bash always is where the package is built).
fn syntax_check(shell: &str, file: &Path) {
    match Process::new(shell).arg("-n").arg(file).output() {
        Ok(out) => {
            assert!(out.status.success(), "{shell} -n {}: {}", file.display(), String::from_utf8_lossy(&out.stderr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && shell != "bash" => {}
        Err(e) => panic!("cannot run {shell}: {e}"),
    }
}

#[test]
fn dates() {
    assert_eq!(crate::man::parse_date("2026-12-05").as_deref(), Ok("2026-12-05"));
    for bad in ["2026-1-05", "26-12-05", "2026/12/05", "yyyy-mm-dd", "", "2026-12-05-01"] {
        assert!(crate::man::parse_date(bad).is_err(), "{bad:?}");
    }
    let today = crate::man::today();
    assert!(crate::man::parse_date(&today).is_ok() && today.as_str() >= "2026-01-01", "{today}");
}
