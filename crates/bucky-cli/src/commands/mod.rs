//! One module per subcommand.

pub mod whisper;
