//! The exit status of every walplayer command, in one place; the binaries
//! map it to the process's status once.

/// How a command ended, as its documented exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every file stored (or the command did what it was asked).
    Ok,
    /// Some files failed.
    FilesFailed,
    /// A usage or configuration error: nothing was sent.
    Usage,
    /// Agents lost (coordinator), or the coordinator lost or refused this
    /// agent (agent with `--once`).
    Lost,
    /// A simulation missed one of its objectives (`--slo`).
    SloBreach,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::FilesFailed => 1,
            Exit::Usage => 2,
            Exit::Lost => 3,
            Exit::SloBreach => 4,
            Exit::Interrupted => 130,
        }
    }

    /// The status of a run that finished: interrupted beats failed files.
    pub fn of_run(files_failed: u64, interrupted: bool) -> Exit {
        if interrupted {
            Exit::Interrupted
        } else if files_failed > 0 {
            Exit::FilesFailed
        } else {
            Exit::Ok
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
