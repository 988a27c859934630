//! Control-plane processes: each one logs to a file and dies with the test binary.
//!
//! Children are spawned from one thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG`, so the kernel kills them even when the test binary itself is
//! killed (a normal exit cleans up through [`crate::ControlPlane::shutdown`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;

use crate::Error;

/// How much of a component's log an error shows.
const LOG_TAIL_BYTES: u64 = 4096;

/// One running control-plane binary.
pub(crate) struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Component {
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, Error> {
        let spawn_error = |source| Error::Spawn {
            component: name,
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(spawn_error)?;
        let err = out.try_clone().map_err(spawn_error)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_supervised(command).map_err(spawn_error)?;
        Ok(Self { name, child, log })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has already exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(error.to_string()),
        }
    }

    /// The last lines of the component's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let read = || -> io::Result<String> {
            let mut file = File::open(&self.log)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let tail = read().unwrap_or_else(|error| format!("(log unreadable: {error})"));
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// Kills the process and reaps it. SIGKILL on purpose: tests use this to simulate
    /// a crash, and nothing here needs a graceful shutdown.
    pub(crate) fn kill(&mut self) {
        // Errors mean the process is already gone, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` on the long-lived spawner thread. `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked the child exits, so forking from short-lived test threads would
/// kill the control plane as soon as the first test ends.
fn spawn_supervised(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            // Failing to start a thread at all leaves nothing sensible to do in a test binary.
            .expect("starting the testenv spawner thread");
        requests
    });
    kill_with_parent(&mut command);
    let (reply, response) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the testenv spawner thread is gone"))?;
    response
        .recv()
        .map_err(|_| io::Error::other("the testenv spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn kill_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
