//! A stand-in database process for rollout-process's tests.
//!
//! ```text
//! rollout-test-server --listen HOST:PORT [--version V] [--config FILE] [--ignore-term] [--fail]
//! ```
//!
//! It reads `--config` (a flags file: `--key=value` lines, `#` comments) once at start, then
//! answers HTTP `GET /status` (200 `OK`), `GET /version` (the `--version` string, default
//! `0.0.0`) and `GET /config` (the config's `greeting`). It writes nothing but its log lines on
//! stderr. It exits with status 0 on SIGTERM, unless `--ignore-term` is given (then only
//! SIGKILL ends it), and at once with status 1 when `--fail` is given or the config has
//! `--fail=true`.

use std::io::Write;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// The command line.
struct Args {
    listen: String,
    version: String,
    config: Option<String>,
    ignore_term: bool,
    fail: bool,
}

fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "rollout-test-server: {message}");
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut version = "0.0.0".to_string();
    let mut config = None;
    let mut ignore_term = false;
    let mut fail = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = Some(args.next().ok_or("--listen needs HOST:PORT")?),
            "--version" => version = args.next().ok_or("--version needs a value")?,
            "--config" => config = Some(args.next().ok_or("--config needs a file")?),
            "--ignore-term" => ignore_term = true,
            "--fail" => fail = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen HOST:PORT is required")?,
        version,
        config,
        ignore_term,
        fail,
    })
}

/// The `--key=value` lines of a flags file, in order.
fn read_flags(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().strip_prefix("--")?.split_once('=')?;
            Some((key.trim().to_string(), value.trim().to_string()))
        })
        .collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    let flags = match args.config.as_deref().map(read_flags).transpose() {
        Ok(flags) => flags.unwrap_or_default(),
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    let flag = |name: &str| {
        flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if args.fail || flag("fail").as_deref() == Some("true") {
        say("failing at start as asked (--fail)");
        return ExitCode::FAILURE;
    }
    let greeting = flag("greeting").unwrap_or_default();
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            say(&format!("cannot watch SIGTERM: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(args.listen.as_str()).await {
        Ok(listener) => listener,
        Err(e) => {
            say(&format!("cannot listen on {}: {e}", args.listen));
            return ExitCode::FAILURE;
        }
    };
    say(&format!(
        "version {} listening on {} (pid {})",
        args.version,
        args.listen,
        std::process::id()
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let version = args.version.clone();
                    let greeting = greeting.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, &version, &greeting).await;
                    });
                }
            }
            _ = term.recv() => {
                if args.ignore_term {
                    say("ignoring SIGTERM (--ignore-term)");
                    continue;
                }
                say("SIGTERM: exiting");
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// Answers one HTTP/1.1 request and closes the connection.
async fn serve(mut stream: TcpStream, version: &str, greeting: &str) -> std::io::Result<()> {
    let mut head: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == &b"\r\n\r\n"[..]) && head.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request = head.split_whitespace();
    let (status, body) = match (request.next(), request.next()) {
        (Some("GET"), Some("/status")) => ("200 OK", "OK".to_string()),
        (Some("GET"), Some("/version")) => ("200 OK", version.to_string()),
        (Some("GET"), Some("/config")) => ("200 OK", greeting.to_string()),
        _ => ("404 Not Found", "not found".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
