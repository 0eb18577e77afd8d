//! The three programs bucky ships, each with its clap definition and the man section it belongs in.

use clap::CommandFactory;

/// One installed program.
pub(crate) struct Program {
    /// The binary's name, as installed in /usr/bin.
    pub(crate) name: &'static str,
    /// Man section: 1 for user commands, 8 for daemons.
    pub(crate) section: &'static str,
    /// The clap definition the binary parses its flags with.
    pub(crate) command: fn() -> clap::Command,
    /// Extra paragraphs of the FILES section of its man page (where the package puts its configuration).
    pub(crate) files: &'static [(&'static str, &'static str)],
}

/// bucky, bucky-agent and bucky-pickle-relay.
pub(crate) const PROGRAMS: &[Program] = &[
    Program { name: "bucky", section: "1", command: bucky_cli::Cli::command, files: &[] },
    Program {
        name: "bucky-agent",
        section: "8",
        command: bucky_agent::Cli::command,
        files: &[
            (
                "/etc/default/bucky-agent",
                "The flags the systemd unit starts the agent with (prefix, bind address, ring, token secret, \
                 memory); read by systemd, not by the agent.",
            ),
            (
                "/lib/systemd/system/bucky-agent.service",
                "The systemd unit. Override User=, Group=, ReadWritePaths= or TimeoutStopSec= with a drop-in: \
                 systemctl edit bucky-agent.",
            ),
        ],
    },
    Program {
        name: "bucky-pickle-relay",
        section: "8",
        command: bucky_pickle_relay::cli::Cli::command,
        files: &[
            (
                "/etc/default/bucky-pickle-relay",
                "The flags the systemd unit starts the relay with (listen address, where lines go).",
            ),
            ("/lib/systemd/system/bucky-pickle-relay.service", "The systemd unit."),
        ],
    },
];
