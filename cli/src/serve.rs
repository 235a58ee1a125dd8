//! `cairn serve`: parses the flags and runs cairn_server::serve (the
//! server, its runtime and its shutdown live in server/; docs/api.md).

use std::io::Write;
use std::sync::Arc;

use crate::{Cli, Failure, ServeArgs};

/// The server's notes: logged (they are not a terminal's).
struct LoggedNotes;

impl cairn_app::Notes for LoggedNotes {
    fn note(&self, message: &str) {
        tracing::info!("{message}");
    }
    fn warning(&self, message: &str) {
        tracing::warn!("{message}");
    }
}

pub fn run(cli: &Cli, args: &ServeArgs) -> Result<u8, Failure> {
    let grace = cairn_engine::graph::parse_duration(&args.grace)
        .map_err(|problem| Failure::usage(format!("--grace {problem}")))?;
    let options = cairn_server::ServeOptions {
        listen: args.listen,
        workspace: cli.workspace_options(),
        public_read: args.public_read,
        grace,
        jobs: args.jobs,
        operations: args.operations,
        keep_operations: args.keep_operations,
    };
    let token_file = options
        .workspace
        .catalog_file()
        .with_file_name(cairn_server::TOKEN_FILE);
    // The address on stdout (a script or test reads the port chosen for
    // port 0 from it); the rest for humans on stderr.
    let mut listening = |address: std::net::SocketAddr| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{address}");
        let _ = stdout.flush();
        crate::report::note(&format!(
            "cairn serve: the token is in {} (send `Authorization: Bearer TOKEN`); SIGTERM or Ctrl-C stops",
            token_file.display()
        ));
    };
    match cairn_server::serve(&options, Arc::new(LoggedNotes), &mut listening) {
        Ok(()) => Ok(0),
        Err(error) => Err(Failure {
            code: error.exit_code(),
            message: error.to_string(),
        }),
    }
}
