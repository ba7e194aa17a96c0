//! The runner <-> guest agent protocol, over a virtio-serial port named
//! [`PORT_NAME`]. Each side writes one JSON object per line.
//!
//! Runner -> agent: a [`Request`] (`{"id": 3, "step": "read", "path": "/proc/cmdline"}`).
//! Agent -> runner: first a [`AgentMsg::Ready`], then one [`AgentMsg::Answer`]
//! per request, in order. A line that is not a valid request gets an answer
//! with `id: null` and `ok: false`; the agent never exits.
//!
//! Around each step the agent writes `coexist: step <id> begin` and
//! `coexist: step <id> end` to /dev/kmsg, so the kernel console itself says
//! which step was running when a splat appeared.

use serde::{Deserialize, Serialize};

/// The virtio-serial port name (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "coexist.agent";

/// Console markers written to /dev/kmsg around each step.
pub fn step_marker(id: u64, what: &str) -> String {
    format!("coexist: step {id} {what}")
}

/// Parses a console line holding a step marker: `(id, "begin"|"end")`.
pub fn parse_step_marker(line: &str) -> Option<(u64, &str)> {
    let i = line.find("coexist: step ")?;
    let rest = &line[i + "coexist: step ".len()..];
    let mut it = rest.split_whitespace();
    let id = it.next()?.parse().ok()?;
    match it.next()? {
        w @ ("begin" | "end") => Some((id, w)),
        _ => None,
    }
}

/// What the guest does for one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Runs a program (PATH=/bin:/sbin); stdout and stderr are captured together.
    Exec {
        argv: Vec<String>,
    },
    /// Reads a file as text.
    Read {
        path: String,
    },
    /// Writes `data` to a file in one write() (sysfs/debugfs friendly).
    Write {
        path: String,
        data: String,
        #[serde(default)]
        create: bool,
    },
    /// Loads a module by name (looked up in modules.dep) or path.
    Insmod {
        module: String,
        #[serde(default)]
        params: String,
    },
    /// Unloads a module (non-blocking, like rmmod).
    Rmmod {
        name: String,
    },
    Sleep {
        ms: u64,
    },
    /// Answers, then restarts the machine (QEMU runs with -no-reboot, so it exits).
    Poweroff,
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Exec { .. } => "exec",
            Step::Read { .. } => "read",
            Step::Write { .. } => "write",
            Step::Insmod { .. } => "insmod",
            Step::Rmmod { .. } => "rmmod",
            Step::Sleep { .. } => "sleep",
            Step::Poweroff => "poweroff",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub step: Step,
}

/// The result of one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The request's id; `None` when the request could not be parsed.
    pub id: Option<u64>,
    pub ok: bool,
    /// The errno the kernel returned, when a system call failed.
    pub errno: Option<i32>,
    /// Its name, e.g. "EBUSY".
    pub errno_name: Option<String>,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// Captured output (exec) or file contents (read).
    #[serde(default)]
    pub output: String,
    /// Exit status of an exec step.
    pub exit_code: Option<i32>,
    pub duration_us: u64,
}

/// One line from the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentMsg {
    Ready {
        kernel_release: String,
        uptime_s: f64,
        agent_version: String,
        /// Setup problems that did not stop the agent (a mount that failed).
        #[serde(default)]
        warnings: Vec<String>,
    },
    Answer(Answer),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request =
            serde_json::from_str(r#"{"id":3,"step":"write","path":"/x","data":"1"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: 3,
                step: Step::Write {
                    path: "/x".into(),
                    data: "1".into(),
                    create: false
                }
            }
        );
        let s = serde_json::to_string(&Request {
            id: 1,
            step: Step::Poweroff,
        })
        .unwrap();
        assert_eq!(s, r#"{"id":1,"step":"poweroff"}"#);
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "null",
            r#"{"id":1}"#,
            r#"{"id":1,"step":"frobnicate"}"#,
            r#"{"id":"x","step":"poweroff"}"#,
            r#"{"id":1,"step":"read"}"#,
            r#"{"id":1,"step":"sleep","ms":-5}"#,
            r#"{"id":1,"step":"read","path":"/a","extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<Request>(bad).is_err(),
                "accepted: {bad}"
            );
        }
    }

    #[test]
    fn markers_round_trip() {
        let m = step_marker(12, "begin");
        assert_eq!(
            parse_step_marker(&format!("[    1.5] {m}")),
            Some((12, "begin"))
        );
        assert_eq!(parse_step_marker("coexist: step x begin"), None);
        assert_eq!(parse_step_marker("coexist: step 3 middle"), None);
    }

    #[test]
    fn agent_messages_are_tagged() {
        let a = AgentMsg::Answer(Answer {
            id: Some(2),
            ok: true,
            ..Default::default()
        });
        let s = serde_json::to_string(&a).unwrap();
        assert!(s.starts_with(r#"{"kind":"answer","id":2"#), "{s}");
        assert_eq!(serde_json::from_str::<AgentMsg>(&s).unwrap(), a);
    }
}
