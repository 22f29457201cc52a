//! Logging to stderr: text for people, or one JSON object per line in the
//! shape of Klio's own logs (zap as controller-runtime configures it:
//! `level`, `ts`, `logger`, `msg`, then the fields).
//!
//! With JSON logs stderr holds only JSON: what walplayer otherwise writes
//! there as plain text (the end-of-run summary, progress lines, usage
//! errors) goes through the `console` target
//! ([`walplayer_klio::console`]), which the text format prints bare and
//! the JSON format as a record; the progress bar is off.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use walplayer_klio::console;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people
    #[default]
    Text,
    /// One JSON object per line: level, ts, logger, msg and fields
    Json,
}

/// The least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    #[value(alias = "warning")]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Logging flags, on every command (Klio's `--debug` included).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log as text, or as one JSON object per line (stderr then holds only JSON)
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "WALPLAYER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Least severe level logged [default: info; RUST_LOG, when set and no level is given, is the filter]
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "LEVEL",
        env = "WALPLAYER_LOG_LEVEL"
    )]
    pub log_level: Option<LogLevel>,
    /// Log at debug level (Klio's flag; the same as --log-level debug)
    #[arg(long, global = true)]
    pub debug: bool,
}

impl LogArgs {
    /// The filter: the level given, else `RUST_LOG`, else info; HTTP/2
    /// internals stay at warn unless `RUST_LOG` opens them, and the console
    /// target always shows (it is what the command has to say).
    pub fn filter(&self, rust_log: Option<&str>) -> String {
        let level = match (self.debug, self.log_level) {
            (_, Some(level)) => Some(level),
            (true, None) => Some(LogLevel::Debug),
            (false, None) => None,
        };
        let base = match (level, rust_log.filter(|v| !v.trim().is_empty())) {
            (Some(level), _) => format!("{},h2=warn,hyper=warn,tower=warn", level.directive()),
            (None, Some(env)) => env.to_string(),
            (None, None) => "info,h2=warn,hyper=warn,tower=warn".to_string(),
        };
        format!("{base},{}=info", console::TARGET)
    }
}

/// The process's log format, fixed once by [`init`] before any command
/// runs; the progress display reads it (like the subscriber it describes,
/// it is process-wide).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format [`init`] chose (text before it ran).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Initializes logging to stderr. `with_time`: text lines carry a time
/// (long-running commands); JSON records always do.
pub fn init(args: &LogArgs, with_time: bool) {
    let _ = FORMAT.set(args.log_format);
    let filter = tracing_subscriber::EnvFilter::try_new(
        args.filter(std::env::var("RUST_LOG").ok().as_deref()),
    )
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.filter(None)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => {
            builder.with_ansi(false).event_format(JsonRecord).init();
            // A panic (a bug) is a record too, not a line of text.
            std::panic::set_hook(Box::new(|info| {
                tracing::error!(target: "console", "walplayer panicked: {info}");
            }));
        }
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false);
            if with_time {
                let text = Bare(tracing_subscriber::fmt::format().with_target(false));
                builder.event_format(text).init();
            } else {
                let text = Bare(
                    tracing_subscriber::fmt::format()
                        .with_target(false)
                        .without_time(),
                );
                builder.event_format(text).init();
            }
        }
    }
}

/// Text format: console events as their bare message, the rest as `F`
/// formats them.
struct Bare<F>(F);

impl<S, N, F> FormatEvent<S, N> for Bare<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != console::TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(writer, "{}", fields.message)
    }
}

/// One JSON object per line, with the key names of Klio's zap logs.
struct JsonRecord;

impl<S, N> FormatEvent<S, N> for JsonRecord
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        writeln!(
            writer,
            "{}",
            json_record(
                *meta.level(),
                std::time::SystemTime::now(),
                meta.target(),
                fields
            )
        )
    }
}

/// The record of one event on one line: `level`, `ts`, `logger`, `msg`
/// in that order (as Klio writes them), then the fields (a field named
/// like one of those four keeps a `field.` prefix).
fn json_record(level: Level, now: std::time::SystemTime, target: &str, fields: Fields) -> String {
    let logger = if target == console::TARGET {
        "walplayer"
    } else {
        target
    };
    let ts = humantime::format_rfc3339_nanos(now).to_string();
    let head = [
        ("level", zap_level(level)),
        ("ts", ts.as_str()),
        ("logger", logger),
        ("msg", fields.message.as_str()),
    ];
    let mut line = String::from("{");
    let push = |line: &mut String, key: &str, value: &serde_json::Value| {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&serde_json::Value::from(key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    };
    for (key, value) in head {
        push(&mut line, key, &value.into());
    }
    for (name, value) in &fields.extra {
        let key = if head.iter().any(|(k, _)| k == name) {
            format!("field.{name}")
        } else {
            name.clone()
        };
        push(&mut line, &key, value);
    }
    line.push('}');
    line
}

/// Level names as Klio's logger writes them.
fn zap_level(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        _ => "trace",
    }
}

/// The message and the other fields of one event.
#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra.push((field.name().into(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra.push((field.name().into(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra.push((field.name().into(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.extra.push((field.name().into(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.extra.push((field.name().into(), text.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    fn parse(args: &[&str]) -> LogArgs {
        Cli::try_parse_from(std::iter::once("walplayer").chain(args.iter().copied()))
            .unwrap()
            .log
    }

    #[test]
    fn level_comes_from_the_flag_then_debug_then_rust_log() {
        let given = parse(&["--log-level", "warn", "--debug"]);
        assert!(given.filter(Some("trace")).starts_with("warn,"));
        assert!(parse(&["--debug"])
            .filter(Some("trace"))
            .starts_with("debug,"));
        assert!(parse(&[]).filter(Some("trace")).starts_with("trace,"));
        assert!(parse(&[]).filter(None).starts_with("info,"));
        assert!(parse(&["--log-level", "warning"])
            .filter(None)
            .starts_with("warn,"));
        // The console target shows whatever the level.
        assert!(parse(&["--log-level", "error"])
            .filter(None)
            .ends_with(",console=info"));
        assert_eq!(parse(&["--log-format", "json"]).log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["w", "--log-level", "loud"]).is_err());
    }

    #[test]
    fn a_record_has_klios_keys() {
        let fields = Fields {
            message: "sink listening".into(),
            extra: vec![
                ("address".into(), "127.0.0.1:1".into()),
                ("msg".into(), "clash".into()),
            ],
        };
        let line = json_record(Level::WARN, std::time::UNIX_EPOCH, "walplayer_sink", fields);
        assert!(
            line.starts_with(r#"{"level":"warning","ts":"1970-01-01T00:00:00.000000000Z","logger":"walplayer_sink","msg":"#),
            "{line}"
        );
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["level"], "warning");
        assert_eq!(record["ts"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(record["logger"], "walplayer_sink");
        assert_eq!(record["msg"], "sink listening");
        assert_eq!(record["address"], "127.0.0.1:1");
        assert_eq!(record["field.msg"], "clash");
        assert!(!line.contains('\n'));
    }
}
