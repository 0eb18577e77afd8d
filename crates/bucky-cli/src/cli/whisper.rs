//! `bucky whisper …`: the local whisper file tools' flags.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};

/// The whisper tree `isempty` walks when given no path (buckytools' default).
const DEFAULT_PREFIX: &str = "/opt/graphite/storage/whisper";

/// Local whisper file tools.
#[derive(Debug, Subcommand)]
pub enum WhisperCommand {
    /// Create a whisper file (whisper-create): `bucky whisper create PATH 10s:1d 1m:30d`.
    Create(CreateArgs),
    /// Print a file's header (whisper-info).
    Info(InfoArgs),
    /// Print the header and the stored points of every archive, sorted by timestamp; with --all, every slot
    /// exactly as whisper-dump.py prints it.
    Dump(DumpArgs),
    /// Write `timestamp value` lines from stdin with one update_many (whisper-update).
    Update(UpdateArgs),
    /// Read a time range as JSON (whisper-fetch).
    Fetch(FetchArgs),
    /// Copy every known point of SRC over DST; both must have the same archives (whisper-merge).
    Merge(MergeArgs),
    /// Heal DST from SRC: fill DST's empty slots (default), or run carbonate's whisper-fill (--carbonate).
    /// A missing DST becomes a durable copy of SRC.
    Fill(FillArgs),
    /// Give a file new retentions, optionally a new method and xFilesFactor (whisper-resize); the original
    /// is kept as PATH.bak: `bucky whisper resize PATH 1m:30d 1h:2y`.
    Resize(ResizeArgs),
    /// Change a file's aggregation method, and optionally its xFilesFactor, in place
    /// (whisper-set-aggregation-method).
    SetAggregation(SetAggregationArgs),
    /// buckytools' modify: resize one archive (--index N --retention R) or change the aggregation method
    /// (--agg), keeping FILE.bak.
    Modify(ModifyArgs),
    /// List whisper files that hold no point (buckytools' bucky-isempty): `bucky whisper isempty -prefix
    /// /var/lib/graphite/whisper`, or give files and directories.
    #[command(name = "isempty")]
    IsEmpty(IsEmptyArgs),
    /// Free the disk blocks of never-written archive regions, in place under the file's flock (buckytools'
    /// bucky-sparsify, without its rename over the live file).
    Sparsify(SparsifyArgs),
    /// Compare two files with the same archives slot by slot (whisper-diff.py, byte-identical output).
    Diff(DiffArgs),
    /// List every .wsp whose header is invalid, with the reason (find-corrupt-whisper-files.py).
    FindCorrupt(FindCorruptArgs),
}

/// `bucky whisper dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The whisper file.
    pub path: PathBuf,
    /// Print JSON (with --all: every slot per archive under "slots", in file order).
    #[arg(long, short = 'j')]
    pub json: bool,
    /// Every slot of every archive in file order, empty and stale ones included, exactly as whisper-dump.py
    /// prints it (header, archive infos, `slot: timestamp, value` lines).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// With --all: only `timestamp:value` lines, as whisper-dump.py --raw (the input of whisper-update).
    #[arg(long, short = 'r', requires = "all", conflicts_with = "json")]
    pub raw: bool,
}

/// `bucky whisper create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The file to create; must not exist.
    pub path: PathBuf,
    /// Retentions, finest first or not: `60:1440`, `1m:30d`, `10s:1d,1m:30d`.
    #[arg(required = true)]
    pub retentions: Vec<String>,
    /// Aggregation method: average, sum, last, max, min, avg_zero, absmax, absmin.
    #[arg(long = "agg", alias = "aggregationMethod", default_value = "average")]
    pub aggregation: String,
    /// xFilesFactor: fraction of known points needed to propagate (0..1).
    #[arg(long, alias = "xFilesFactor", default_value_t = 0.5, allow_negative_numbers = true)]
    pub xff: f64,
    /// Leave the empty archives as holes in the file.
    #[arg(long)]
    pub sparse: bool,
}

/// `bucky whisper info|dump`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The whisper file.
    pub path: PathBuf,
    /// Print JSON.
    #[arg(long, short = 'j')]
    pub json: bool,
}

/// `bucky whisper update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The whisper file.
    pub path: PathBuf,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// Apply whisper's single-point `update` per line (stricter: rejects future and too-old points) and
    /// report the rejected ones.
    #[arg(long)]
    pub single: bool,
    /// Hold whisper's exclusive flock while writing.
    #[arg(long)]
    pub lock: bool,
}

/// `bucky whisper fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The whisper file.
    pub path: PathBuf,
    /// Start of the range (epoch seconds, exclusive).
    #[arg(allow_hyphen_values = true)]
    pub from: i64,
    /// End of the range (epoch seconds) or `now`.
    #[arg(default_value = "now", allow_hyphen_values = true)]
    pub until: String,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// Read this archive (precision such as `60` or `1m`) instead of the one fetch would choose.
    #[arg(long)]
    pub archive: Option<String>,
    /// Print JSON (the default; kept for symmetry with the other commands).
    #[arg(long, short = 'j')]
    pub json: bool,
}

/// `bucky whisper merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Source file.
    pub src: PathBuf,
    /// Destination file (overwritten where SRC has data).
    pub dst: PathBuf,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// Only merge points newer than this.
    #[arg(long)]
    pub from: Option<i64>,
    /// Only merge points up to this.
    #[arg(long)]
    pub until: Option<i64>,
}

/// `bucky whisper fill`.
#[derive(Debug, Args)]
pub struct FillArgs {
    /// Source file (read only).
    pub src: PathBuf,
    /// Destination file (healed in place, or created as a copy of SRC).
    pub dst: PathBuf,
    /// The clock (epoch seconds, may be fractional); default: the system clock.
    #[arg(long)]
    pub now: Option<f64>,
    /// Reproduce carbonate's whisper-fill exactly, quirks included (0.0 is a gap, boundary cross-fills).
    #[arg(long)]
    pub carbonate: bool,
    /// Carbonate mode: treat every destination slot as a gap (whisper-fill -o).
    #[arg(long, requires = "carbonate")]
    pub overwrite: bool,
    /// Hold whisper's flock: shared on SRC while reading it, exclusive on DST while filling it.
    #[arg(long, short = 'l')]
    pub lock: bool,
    /// With --lock: write nearby filled gaps as one block (much faster for many gaps). Only safe when
    /// every writer takes whisper's flock (carbon-cache: WHISPER_LOCK_WRITES = True).
    #[arg(long, requires = "lock")]
    pub coalesce: bool,
    /// Newest time to fill (carbonate-sync's startFrom); default now.
    #[arg(long)]
    pub start_from: Option<f64>,
    /// Oldest time to fill (endAt); default: all of history.
    #[arg(long, default_value_t = 0.0)]
    pub end_at: f64,
    /// Seconds to wait for a lock before giving up.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper resize`.
#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// The whisper file, replaced atomically by the resized one.
    pub path: PathBuf,
    /// The new retentions, all of them: `60:1440`, `1m:30d`, `10s:1d,1m:30d`.
    #[arg(required = true)]
    pub retentions: Vec<String>,
    /// New xFilesFactor (0..1); default: the file's.
    #[arg(long, alias = "xFilesFactor", allow_negative_numbers = true)]
    pub xff: Option<f64>,
    /// New aggregation method (average, sum, last, max, min, avg_zero, absmax, absmin); default: the file's.
    #[arg(long = "agg", alias = "aggregationMethod")]
    pub aggregation: Option<String>,
    /// Fill each new slot by aggregating the old points inside it (whisper-resize --aggregate), instead of
    /// copying the old archives' points.
    #[arg(long)]
    pub aggregate: bool,
    /// Keep no PATH.bak (an older one is removed too, as whisper-resize does).
    #[arg(long)]
    pub nobackup: bool,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// Accepted and ignored, as whisper-resize ignores it.
    #[arg(long, hide = true)]
    pub force: bool,
    /// Seconds to wait for the file's lock before giving up.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper set-aggregation`.
#[derive(Debug, Args)]
pub struct SetAggregationArgs {
    /// The whisper file.
    pub path: PathBuf,
    /// The new method: average, sum, last, max, min, avg_zero, absmax, absmin.
    pub method: String,
    /// New xFilesFactor, as whisper-set-aggregation-method's third argument.
    #[arg(value_name = "XFF", conflicts_with = "xff", allow_negative_numbers = true)]
    pub xff_arg: Option<f64>,
    /// New xFilesFactor (0..1); default: unchanged.
    #[arg(long, alias = "xFilesFactor", allow_negative_numbers = true)]
    pub xff: Option<f64>,
    /// Seconds to wait for the file's lock before giving up.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper modify` (buckytools' `bucky modify`).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).args(["index", "agg"])))]
pub struct ModifyArgs {
    /// The whisper file to modify.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// The archive to resize, 0 being the finest (with --retention); the others keep their retentions.
    #[arg(long, requires = "retention", conflicts_with = "agg")]
    pub index: Option<usize>,
    /// The archive's new retention, e.g. 1m:30d.
    #[arg(long, requires = "index")]
    pub retention: Option<String>,
    /// The new aggregation method; stored values are kept as they are.
    #[arg(long)]
    pub agg: Option<String>,
    /// The clock (epoch seconds); default, or a bare --now (buckytools' flag): the system clock.
    #[arg(long, num_args = 0..=1, value_name = "T")]
    pub now: Option<Option<i64>>,
    /// Seconds to wait for the file's lock before giving up.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper isempty`.
#[derive(Debug, Args)]
#[command(after_help = "\
A point counts when whisper's fetch returns a value (not NaN) for it, looking at each archive over the \
stretch of history the finer archives do not cover, as buckytools does: a slot left over from an older \
cycle is not a point. Exits 1 if a file could not be read (reported on stderr; the scan goes on).")]
pub struct IsEmptyArgs {
    /// Files to examine, or directories to walk for *.wsp (hidden directories and symlinks skipped).
    /// Default: the --prefix tree.
    pub paths: Vec<PathBuf>,
    /// Print metric names (the path relative to --prefix, `/` as `.`) instead of paths.
    #[arg(short = 'm', long = "metricname")]
    pub metric_name: bool,
    /// For every file, print its newest point (`PATH: Most recent DP: T or RFC3339<TAB>VALUE`) or
    /// `PATH: No valid data points`; empty files are then not listed on their own.
    #[arg(short = 'l', long = "last")]
    pub last: bool,
    /// For every file, print `PATH: N data points used out of M in ARG` (M: the slots looked at); empty files
    /// are then not listed on their own.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// The whisper tree: walked when no PATH is given, and stripped from paths to make metric names.
    #[arg(short = 'p', long, default_value = DEFAULT_PREFIX)]
    pub prefix: PathBuf,
    /// Print one JSON summary instead: counts, and the files (all of them with -l or -d, else the empty
    /// ones) with their points, slots and newest point.
    #[arg(long, short = 'j')]
    pub json: bool,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// Seconds to wait for a file's lock before reporting it and moving on.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper sparsify`.
#[derive(Debug, Args)]
#[command(after_help = "\
Unlike buckytools' bucky-sparsify, which writes a copy and renames it over the original (points that \
carbon-cache writes to the old, still open inode are lost), the file keeps its inode and its exact content: \
each filesystem block that reads as zeros is deallocated with fallocate(PUNCH_HOLE), under the file's \
exclusive flock (the lock carbon-cache takes with WHISPER_LOCK_WRITES = True). A writer that ignores the \
flock could still lose a point written into a zero block at the instant it is punched: run it on files no \
lock-less writer is filling. Exits 1 if a file could not be sparsified (reported on stderr; the others are \
still done).")]
pub struct SparsifyArgs {
    /// Whisper files, or directories to walk for *.wsp (hidden directories and symlinks skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Change nothing: report how many bytes each file would free (takes only a shared lock).
    #[arg(long = "no-op", alias = "noop", short = 'n')]
    pub no_op: bool,
    /// Print only the total, not one line per file.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Accepted for buckytools' `-d` (its per-file log lines are always printed here).
    #[arg(short = 'd', long = "debug", hide = true)]
    pub debug: bool,
    /// Print one JSON summary instead: every file's size, allocation before and after, zero bytes found.
    #[arg(long, short = 'j')]
    pub json: bool,
    /// Seconds to wait for a file's lock before reporting it and moving on.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
}

/// `bucky whisper diff`.
#[derive(Debug, Args)]
#[command(after_help = "\
Both files must have the same archives. Archives are numbered by increasing retention; each is compared \
from now - its retention up to --until (or now), then --until moves back to that start. The files are not \
locked, as whisper-diff does not lock them.")]
pub struct DiffArgs {
    /// The first file (value_a).
    pub path_a: PathBuf,
    /// The second file (value_b).
    pub path_b: PathBuf,
    /// Show a summary of differences: per archive, the slots compared and how many differ.
    #[arg(long)]
    pub summary: bool,
    /// Skip slots where either value is undefined (default: compare slots where either is defined).
    #[arg(long)]
    pub ignore_empty: bool,
    /// Print output in simple space-separated columns.
    #[arg(long)]
    pub columns: bool,
    /// Do not print column headers.
    #[arg(long)]
    pub no_headers: bool,
    /// Unix epoch time of the end of the compared interval (default: now; 0 also means now).
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<i64>,
    /// Output the results as JSON (whisper-diff's format).
    #[arg(long, short = 'j')]
    pub json: bool,
    /// The clock (epoch seconds); default: the system clock.
    #[arg(long)]
    pub now: Option<i64>,
}

/// `bucky whisper find-corrupt`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks what whisper checks (header size, aggregation type, xFilesFactor, archive entries) and what it \
forgets: no archives, empty archives, archives inside the header, overlapping, out of order or past the end \
of the file (truncated), a file longer than its archives, a maxRetention that disagrees with them. Prints \
`PATH: corrupt|malformed: REASON` per bad file. Exits 1 if any file is bad or could not be read (those are \
reported on stderr), 0 otherwise.")]
pub struct FindCorruptArgs {
    /// Directories to walk for *.wsp (hidden directories and symlinks skipped), or files to check.
    /// Default: the --prefix tree.
    pub paths: Vec<PathBuf>,
    /// The whisper tree walked when no PATH is given.
    #[arg(short = 'p', long, default_value = "/opt/graphite/storage/whisper")]
    pub prefix: PathBuf,
    /// Print one JSON summary instead: files scanned, and each bad or unreadable file with its reason.
    #[arg(long, short = 'j')]
    pub json: bool,
}
