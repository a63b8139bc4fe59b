//! The command line, parsed by hand: four commands and eight options do not
//! need an argument-parsing crate, and leaving one out takes about 10 s off a
//! fresh build on 2 cores (the README's first command includes that build).

use std::path::PathBuf;

/// What `weft-bench help` prints.
pub const USAGE: &str = "\
weft-bench: weft latency and throughput beside the floor and peer libraries

usage:
  weft-bench --version              the version
  weft-bench quick [--out DIR]      the key scenarios, 3 runs with short samples:
                                    weft beside its floor and its best peer
  weft-bench list                   every scenario, one line each
  weft-bench run SCENARIO... [options]
                                    run scenarios in the order given
  weft-bench stress [--quick|--nightly|--preset P] [--paths A,B,...]
                    [--results DIR] [--out DIR] [--json]
                                    ramp each path's offered rate (open loop,
                                    coordinated omission corrected) to find
                                    its knee and saturation rate, hold 1.2x
                                    saturation, time the recovery, send
                                    bursts; append the run to the results
                                    store (default target/weft-bench-results,
                                    or $WEFT_BENCH_RESULTS); --out writes
                                    stress.json and the plots. Paths:
                                    shm-spsc, shm-broadcast-N, shm-many-N,
                                    udp-N, gateway. Exit 1 on silent loss.
  weft-bench compare [--results DIR] [--band FRACTION]
                                    the newest stored stress run against the
                                    previous one on this machine; exit 1 on
                                    a regression beyond the noise band
  weft-bench help                   this text

run options:
  --json             one JSON object per result per line instead of a table
  --samples N        measured samples: round trips for latency scenarios
                     (default 500000; 50000 over UDP), messages for throughput
                     scenarios (default 20000000; 5000000 for mcast-throughput,
                     1000000 for udp-raw-throughput)
  --size BYTES       message size (scenarios marked SIZE in `list`)
  --rate R           fixed send rate, messages per second (scenarios marked
                     RATE): round trips are timed from their scheduled send,
                     corrected for coordinated omission
  --subscribers N    subscriber processes (scenarios marked SUBSCRIBERS)
  --runs N           runs of the whole list, round robin; tables show medians
                     and min-max over runs (default 1)
  --retries N        repeats of a run whose floor probes disagree by more than
                     1.5x (default 2)
  --empty-poll-pauses N
                     CPU pause hints a throughput scenario's reader spins
                     after a poll that found nothing, the same for weft and
                     every peer (default 256; round trips always spin one)
  --out DIR          write results.jsonl, table.txt, an hdrhistogram interval
                     log per latency result and plots (SVG and PNG) to DIR
";

/// Options of `run`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOpts {
    pub json: bool,
    pub samples: Option<u64>,
    pub size: Option<usize>,
    pub rate: Option<f64>,
    pub subscribers: Option<usize>,
    pub runs: u32,
    pub retries: u32,
    pub out: Option<PathBuf>,
    /// Pause hints a throughput reader spins after an empty poll.
    pub empty_poll_pauses: u32,
}

impl Default for RunOpts {
    fn default() -> Self {
        Self {
            json: false,
            samples: None,
            size: None,
            rate: None,
            subscribers: None,
            runs: 1,
            retries: 2,
            out: None,
            empty_poll_pauses: crate::reader_idle::DEFAULT_EMPTY_POLL_PAUSES,
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq)]
pub enum Cmd {
    Help,
    Version,
    List,
    Run {
        scenarios: Vec<String>,
        opts: RunOpts,
    },
    Quick {
        out: Option<PathBuf>,
    },
    /// `stress`.
    Stress(crate::stress::StressOpts),
    /// `compare`.
    Compare(crate::stress::CompareOpts),
    /// Internal: the second process of a two-process scenario.
    Child {
        args: Vec<String>,
    },
}

/// Parses the arguments after the program name. The error says what was
/// wrong; the caller adds the usage hint.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cmd, String> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Err("no command given".into());
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        "version" | "-V" | "--version" => no_more(args, "--version").map(|()| Cmd::Version),
        "list" => no_more(args, "list").map(|()| Cmd::List),
        "__child" => Ok(Cmd::Child {
            args: args.collect(),
        }),
        "quick" => {
            let mut out = None;
            let mut args = Options::new(args);
            while let Some(arg) = args.next_arg() {
                match arg.as_str() {
                    "--out" => out = Some(PathBuf::from(args.value("--out")?)),
                    other => return Err(format!("quick: unexpected argument '{other}'")),
                }
            }
            Ok(Cmd::Quick { out })
        }
        "stress" => {
            let mut opts = crate::stress::StressOpts {
                preset: "quick".into(),
                paths: None,
                results: crate::stress::default_results(),
                out: None,
                json: false,
            };
            let mut args = Options::new(args);
            while let Some(arg) = args.next_arg() {
                match arg.as_str() {
                    "--quick" => opts.preset = "quick".into(),
                    "--nightly" => opts.preset = "nightly".into(),
                    "--preset" => opts.preset = args.value("--preset")?,
                    "--paths" => {
                        opts.paths = Some(
                            args.value("--paths")?
                                .split(',')
                                .filter(|p| !p.is_empty())
                                .map(String::from)
                                .collect(),
                        )
                    }
                    "--results" => opts.results = PathBuf::from(args.value("--results")?),
                    "--out" => opts.out = Some(PathBuf::from(args.value("--out")?)),
                    "--json" => opts.json = true,
                    other => return Err(format!("stress: unexpected argument '{other}'")),
                }
            }
            Ok(Cmd::Stress(opts))
        }
        "compare" => {
            let mut opts = crate::stress::CompareOpts {
                results: crate::stress::default_results(),
                band: None,
            };
            let mut args = Options::new(args);
            while let Some(arg) = args.next_arg() {
                match arg.as_str() {
                    "--results" => opts.results = PathBuf::from(args.value("--results")?),
                    "--band" => {
                        let b: f64 = args.number("--band")?;
                        if !(0.0..1.0).contains(&b) {
                            return Err(format!("--band {b}: expected a fraction from 0 to 1"));
                        }
                        opts.band = Some(b);
                    }
                    other => return Err(format!("compare: unexpected argument '{other}'")),
                }
            }
            Ok(Cmd::Compare(opts))
        }
        "run" => {
            let mut opts = RunOpts::default();
            let mut scenarios = Vec::new();
            let mut args = Options::new(args);
            while let Some(arg) = args.next_arg() {
                match arg.as_str() {
                    "--json" => opts.json = true,
                    "--samples" => opts.samples = Some(args.number("--samples")?),
                    "--size" => opts.size = Some(args.number("--size")?),
                    "--rate" => opts.rate = Some(args.number("--rate")?),
                    "--subscribers" => opts.subscribers = Some(args.number("--subscribers")?),
                    "--runs" => opts.runs = args.number("--runs")?,
                    "--retries" => opts.retries = args.number("--retries")?,
                    "--empty-poll-pauses" => {
                        let n: u32 = args.number("--empty-poll-pauses")?;
                        if !(1..=65536).contains(&n) {
                            return Err(format!("--empty-poll-pauses {n}: expected 1 to 65536"));
                        }
                        opts.empty_poll_pauses = n;
                    }
                    "--out" => opts.out = Some(PathBuf::from(args.value("--out")?)),
                    other if other.starts_with('-') => {
                        return Err(format!("run: unknown option '{other}'"))
                    }
                    _ => scenarios.push(arg),
                }
            }
            if scenarios.is_empty() {
                return Err("run: name at least one scenario (see `weft-bench list`)".into());
            }
            Ok(Cmd::Run { scenarios, opts })
        }
        other => Err(format!("unknown command '{other}'")),
    }
}

fn no_more(mut args: impl Iterator<Item = String>, command: &str) -> Result<(), String> {
    match args.next() {
        None => Ok(()),
        Some(a) => Err(format!("{command}: unexpected argument '{a}'")),
    }
}

/// Arguments with `--opt value` and `--opt=value` spellings.
struct Options<I> {
    args: I,
    /// The value of an `--opt=value` argument just split.
    pending: Option<String>,
}

impl<I: Iterator<Item = String>> Options<I> {
    fn new(args: I) -> Self {
        Self {
            args,
            pending: None,
        }
    }

    fn next_arg(&mut self) -> Option<String> {
        let arg = self.args.next()?;
        match arg.split_once('=') {
            Some((opt, value)) if opt.starts_with("--") => {
                self.pending = Some(value.to_string());
                Some(opt.to_string())
            }
            _ => Some(arg),
        }
    }

    fn value(&mut self, opt: &str) -> Result<String, String> {
        self.pending
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{opt} needs a value"))
    }

    fn number<T: std::str::FromStr>(&mut self, opt: &str) -> Result<T, String> {
        let v = self.value(opt)?;
        v.parse()
            .map_err(|_| format!("{opt} {v}: expected a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Cmd, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn commands_and_options_parse_in_both_spellings() {
        assert_eq!(parse_str("list"), Ok(Cmd::List));
        assert_eq!(parse_str("--help"), Ok(Cmd::Help));
        assert_eq!(parse_str("--version"), Ok(Cmd::Version));
        assert!(parse_str("--version extra").is_err());
        assert_eq!(
            parse_str("quick --out=r"),
            Ok(Cmd::Quick {
                out: Some("r".into())
            })
        );
        assert_eq!(
            parse_str(
                "run floor-shm --samples 20000 shm-pingpong --json --rate=1e5 --runs 5 --out d --empty-poll-pauses 64"
            ),
            Ok(Cmd::Run {
                scenarios: vec!["floor-shm".into(), "shm-pingpong".into()],
                opts: RunOpts {
                    json: true,
                    samples: Some(20000),
                    rate: Some(1e5),
                    runs: 5,
                    out: Some("d".into()),
                    empty_poll_pauses: 64,
                    ..RunOpts::default()
                }
            })
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        for (line, says) in [
            ("", "no command"),
            ("bench", "unknown command 'bench'"),
            ("list x", "unexpected argument 'x'"),
            ("run", "at least one scenario"),
            ("run floor-shm --samples", "--samples needs a value"),
            (
                "run floor-shm --samples many",
                "--samples many: expected a number",
            ),
            ("run floor-shm --size=-1", "--size -1: expected a number"),
            ("run floor-shm --fast", "unknown option '--fast'"),
            ("quick --runs 3", "unexpected argument '--runs'"),
            (
                "run shm-throughput --empty-poll-pauses 0",
                "--empty-poll-pauses 0: expected 1 to 65536",
            ),
        ] {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(says), "{line:?}: {err}");
        }
    }
}
