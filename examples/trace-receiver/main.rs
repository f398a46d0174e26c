//! A small OTLP/gRPC trace receiver for the demo: it collects the spans exported to
//! it and, when stopped, prints the traces it got as trees.
//!
//! ```text
//! trace-receiver [ADDRESS] [--quiet SECONDS]
//! ```
//!
//! It listens on `ADDRESS` (default `127.0.0.1:4317`, OTLP/gRPC's port), so a
//! program exports to it with `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317`.
//! On SIGTERM or SIGINT, or once no span has come for `--quiet` seconds (after the
//! first one), it prints each trace to stdout (span names, kinds, the sending
//! service's `service.name`, durations, children indented under their parent) and
//! exits 0.
//! It speaks no mDNS: a plain gRPC server on loopback.

#[path = "../../crates/micro-core/tests/support/otlp.rs"]
mod otlp;

use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: trace-receiver [ADDRESS] [--quiet SECONDS]";

/// The command line: where to listen, and how long a quiet spell ends the run.
#[derive(Debug)]
struct Args {
    address: String,
    quiet: Option<Duration>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        address: "127.0.0.1:4317".to_string(),
        quiet: None,
    };
    let mut address = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quiet" => {
                let value = args.next().ok_or("--quiet needs a number of seconds")?;
                let seconds: f64 = value
                    .parse()
                    .map_err(|_| format!("--quiet {value:?}: not a number of seconds"))?;
                let quiet = Duration::try_from_secs_f64(seconds)
                    .map_err(|e| format!("--quiet {value:?}: {e}"))?;
                parsed.quiet = Some(quiet);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if address.is_none() => address = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if let Some(address) = address {
        parsed.address = address;
    }
    Ok(parsed)
}

/// Returns when SIGTERM or SIGINT arrives (or, if they cannot be watched, never).
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Returns once spans have come and then none for `quiet`.
async fn quiet_for(spans: &otlp::Spans, quiet: Duration) {
    let mut count = 0;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = spans.all().len();
        if now != count {
            count = now;
            since = Instant::now();
        } else if count > 0 && since.elapsed() >= quiet {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("trace-receiver: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (address, spans) = match otlp::listen(&args.address).await {
        Ok(listening) => listening,
        Err(e) => {
            eprintln!("trace-receiver: listening on {}: {e}", args.address);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("trace-receiver: listening on {address}");
    match args.quiet {
        Some(quiet) => {
            tokio::select! {
                () = stopped() => {}
                () = quiet_for(&spans, quiet) => {}
            }
        }
        None => stopped().await,
    }
    let received = spans.all();
    if received.is_empty() {
        println!("(no spans received)");
    } else {
        print!("{}", otlp::trees(&received));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Result<Args, String> {
        parse(line.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_to_the_otlp_grpc_port_on_loopback() {
        let parsed = args(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.address, "127.0.0.1:4317");
        assert_eq!(parsed.quiet, None);
    }

    #[test]
    fn takes_an_address_and_a_quiet_time() {
        let parsed = args(&["127.0.0.1:0", "--quiet", "1.5"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.address, "127.0.0.1:0");
        assert_eq!(parsed.quiet, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(args(&["--quiet"]).is_err());
        assert!(args(&["--quiet", "soon"]).is_err());
        assert!(args(&["--quiet", "-1"]).is_err());
        assert!(args(&["--verbose"]).is_err());
        assert!(args(&["a:1", "b:2"]).is_err());
    }

    fn span(
        service: &str,
        trace: u8,
        id: u8,
        parent: Option<u8>,
        start: u64,
        ms: u64,
    ) -> otlp::Received {
        otlp::Received {
            service: service.to_string(),
            span: opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: vec![trace; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: format!("span {id}"),
                kind: if parent.is_some() { 3 } else { 2 },
                start_time_unix_nano: start,
                end_time_unix_nano: start + ms * 1_000_000,
                ..Default::default()
            },
        }
    }

    fn attempt(mut span: otlp::Received) -> otlp::Received {
        span.span
            .attributes
            .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "micro.attempt".to_string(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(1),
                    ),
                }),
                ..Default::default()
            });
        span
    }

    #[test]
    fn draws_each_trace_as_a_tree_of_names_kinds_services_and_durations() {
        // Out of order, two traces, one span whose parent never came.
        let spans = [
            span("b", 1, 3, Some(2), 30, 5),
            span("c", 2, 9, None, 5, 1),
            span("a", 1, 1, None, 10, 40),
            span("a", 1, 4, Some(1), 50, 2),
            attempt(span("a", 1, 2, Some(1), 20, 20)),
            span("b", 1, 7, Some(6), 60, 3),
        ];
        let drawn = otlp::trees(&spans);
        let lines: Vec<&str> = drawn.lines().map(str::trim_end).collect();
        let one = "01".repeat(16);
        let two = "02".repeat(16);
        assert_eq!(
            lines,
            [
                format!("trace {two} (1 span)"),
                "  span 9  server  c    1.000 ms".to_string(),
                format!("trace {one} (5 spans)"),
                "  span 1                server  a   40.000 ms".to_string(),
                "    span 2 (attempt 1)  client  a   20.000 ms".to_string(),
                "      span 3            client  b    5.000 ms".to_string(),
                "    span 4              client  a    2.000 ms".to_string(),
                "  span 7                client  b    3.000 ms".to_string(),
            ]
        );
    }
}
