//! Checks a running gateway against the ways browsers fail in front of one.
//!
//! ```text
//! cargo run --example doctor --features doctor -- URL [--origin ORIGIN] [--api PATH] \
//!     [--headers LIST] [--ws PATH] [--sse PATH] [--protocol NAME] [--timeout SECS] [--json]
//! ```
//!
//! Prints one line per finding (`ok|warn|fail  name — cause; fix`), or one JSON object with
//! `--json`. The exit status is 1 when any check fails, 2 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use sandbox_gateway::doctor::{Probe, ProbeBuilder};

const USAGE: &str = "usage: doctor URL [--origin ORIGIN] [--api PATH] [--headers LIST] [--ws PATH] \
[--sse PATH] [--protocol NAME] [--timeout SECS] [--json]

  URL              the page the browser loads, e.g. https://gateway.example/ or http://localhost:8080/
  --origin ORIGIN  the origin of the page that calls the API cross-origin (for the CORS preflight)
  --api PATH       an API path to send a CORS preflight to
  --headers LIST   the request headers the preflight asks for (default authorization,content-type)
  --ws PATH        a WebSocket path to upgrade
  --sse PATH       an event-stream path to read
  --protocol NAME  a WebSocket subprotocol to ask for
  --timeout SECS   the bound of each network step (default 5)
  --json           print the report as JSON";

struct Args {
    probe: ProbeBuilder,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut url = None;
    let mut flags = Vec::new();
    let mut json = false;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--json" => json = true,
            "--origin" | "--api" | "--headers" | "--ws" | "--sse" | "--protocol" | "--timeout" => {
                let value = it.next().ok_or(format!("{arg} needs a value"))?;
                flags.push((arg, value));
            }
            other if other.starts_with("--") => {
                return Err(format!("unknown argument `{other}`\n{USAGE}"))
            }
            _ if url.is_none() => url = Some(arg),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    let mut probe = Probe::builder(url.ok_or(USAGE.to_owned())?);
    for (flag, value) in flags {
        probe = match flag.as_str() {
            "--origin" => probe.origin(value),
            "--api" => probe.api_path(value),
            "--headers" => probe.preflight_headers(value.split(',').filter(|h| !h.is_empty())),
            "--ws" => probe.ws_path(value),
            "--sse" => probe.sse_path(value),
            "--protocol" => probe.ws_protocol(value),
            _ => {
                let secs: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 3600.0)
                    .ok_or(format!("--timeout: `{value}` is not a number of seconds"))?;
                probe.timeout(Duration::from_secs_f64(secs))
            }
        };
    }
    Ok(Args { probe, json })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let probe = match args.probe.build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("doctor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(probe.run());
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
