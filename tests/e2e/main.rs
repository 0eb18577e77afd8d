//! One integration binary for every cross-process test (links once; faster on 2 cores).
//! Each module covers one area and starts the real binaries it needs.

mod agent;
mod agent_limits;
mod agent_server;
mod audit;
mod cli;
mod cluster;
mod config;
mod diag;
mod drain;
mod file_list_cache;
mod flap;
mod go_carbon;
mod go_carbon_whisper;
mod go_client;
mod live;
mod mixed;
mod node_full;
mod papercuts;
mod pickle_relay;
mod ringconf;
mod whisper_tools;
