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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The virtio-serial port name (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "coexist.agent";

/// In the image of a modular kernel (a distribution's): the modules the
/// agent loads, one a line, in order, relative to
/// `/lib/modules/<release>/`, before it looks for its port.
pub const PRELOAD_MODULES: &str = "/etc/coexist/preload-modules";

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

/// What the guest does for one request. The step kinds ([`Step::kinds`],
/// [`Step::kind`]) are the snake_case names of these variants, as on the wire.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    strum::VariantNames,
    strum::IntoStaticStr,
    strum::EnumDiscriminants,
)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
#[strum(serialize_all = "snake_case")]
// `StepKind`: a step's kind without its arguments, named as on the wire.
#[strum_discriminants(
    name(StepKind),
    derive(strum::IntoStaticStr, strum::EnumIter),
    strum(serialize_all = "snake_case")
)]
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
    /// The runner's first words to a guest restored from a snapshot: sets
    /// the wall clock, mixes `seed` (hex) into the kernel's entropy pool,
    /// and answers who the guest is. data: [`AnswerData::Hello`].
    Hello {
        now_unix_ns: u64,
        seed: String,
    },
    /// insmod of a livepatch module, then waits until its transition is
    /// done (`/sys/kernel/livepatch/<name>/transition` reads 0).
    /// data: [`AnswerData::Livepatch`].
    LivepatchLoad {
        module: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Writes 0 to `enabled`, then waits until the patch's directory is gone.
    /// data: [`AnswerData::Livepatch`].
    LivepatchDisable {
        name: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// rmmod of the livepatch module.
    LivepatchUnload {
        name: String,
    },
    /// What `/sys/kernel/livepatch/<name>/` says: whether the patch is
    /// there, enabled, and in transition. data: [`AnswerData::LivepatchState`].
    LivepatchState {
        name: String,
    },
    /// Opens a BPF object from /fixtures/bpf, loads only `program` with its
    /// attach target set to `target`, and attaches it. data: [`AnswerData::Attach`].
    /// `kind` must match the program's section; `fmod_ret` is the value an
    /// fmod_ret program returns instead of calling the function (0: call it).
    BpfAttach {
        program: String,
        kind: BpfKind,
        target: String,
        #[serde(default)]
        object: Option<String>,
        #[serde(default)]
        fmod_ret: i64,
    },
    /// Detaches `handle`, or the most recent attachment when it is omitted
    /// (for loops inside `repeat` and `concurrently`).
    BpfDetach {
        #[serde(default)]
        handle: Option<u32>,
    },
    /// data: [`AnswerData::Stats`].
    BpfStats {
        handle: u32,
    },
    /// Reads every regular file under `dir` (recursively, not following
    /// symlinks) whose name ends with `suffix`, as bytes: gcov's `.gcda`
    /// counts under /sys/kernel/debug/gcov. data: [`AnswerData::Files`].
    ReadFiles {
        dir: String,
        suffix: String,
    },
    /// Makes the target function run and returns what userspace saw
    /// (see [`TRIGGER_TARGETS`]).
    Trigger {
        target: String,
    },
    /// The function's entry in /sys/kernel/tracing/enabled_functions.
    /// data: [`AnswerData::Ftrace`].
    FtraceState {
        function: String,
    },
    /// Runs `steps` `times` times in order. ok only if every step was.
    /// data: `{"iterations", "failures": [{"iteration", "index", "errno_name", "error"}]}`.
    Repeat {
        times: u32,
        steps: Vec<Step>,
    },
    /// Runs each list in its own thread, each looping over its list until
    /// `duration_ms` has passed; an iteration stops at its first failing step.
    /// data: [`AnswerData::Concurrently`].
    Concurrently {
        duration_ms: u64,
        lists: Vec<Vec<Step>>,
    },
    /// Runs one of the kernel's own selftests from the image's
    /// `/selftests` (see [`SELFTESTS_DIR`]) with bash: a kselftest through
    /// the kselftest runner (`kselftest/runner.sh`, KTAP output), or an
    /// ftracetest test case through `ftrace/ftracetest`. The output is
    /// stdout and stderr together (its middle cut when it is longer than
    /// [`STEP_OUTPUT_MAX`], as every step's; the end, with the results,
    /// is kept);
    /// `exit_code` is the runner's. `ok` says the test ran to its end,
    /// whatever its result: the results are read from the output by the
    /// host. After `timeout_ms` the test's process group is killed and
    /// the step fails with ETIMEDOUT, with the output so far.
    Selftest {
        runner: SelftestRunner,
        /// The directory under [`SELFTESTS_DIR`] (`livepatch`, `ftrace`).
        collection: String,
        /// The test, relative to the collection (`test-livepatch.sh`,
        /// `test.d/direct/ftrace-direct.tc`).
        test: String,
        timeout_ms: u64,
    },
}

/// Where the image keeps the kernel's selftests (`tools/testing/selftests`).
pub const SELFTESTS_DIR: &str = "/selftests";

/// The most output an answer carries, whatever its step: a longer output
/// keeps its head and its tail (where results are), and a marker says
/// how many bytes were cut between them. Below the runner's own cap on a
/// step's output (64 KiB), with room for JSON escapes in the answer's line.
pub const STEP_OUTPUT_MAX: usize = 56 * 1024;

/// Which of the kernel's test runners a selftest goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelftestRunner {
    /// `tools/testing/selftests/kselftest/runner.sh` (`run_many`): KTAP.
    Kselftest,
    /// `tools/testing/selftests/ftrace/ftracetest`: `[N] description\t[RESULT]`.
    Ftracetest,
}

impl SelftestRunner {
    pub fn as_str(self) -> &'static str {
        match self {
            SelftestRunner::Kselftest => "kselftest",
            SelftestRunner::Ftracetest => "ftracetest",
        }
    }
}

impl Step {
    /// Every step kind, as on the wire, in declaration order.
    pub fn kinds() -> &'static [&'static str] {
        <Step as strum::VariantNames>::VARIANTS
    }

    /// The step's kind, as on the wire (`"bpf_attach"`).
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

impl StepKind {
    /// Every kind, in the order of [`Step`].
    pub fn all() -> impl Iterator<Item = StepKind> {
        <StepKind as strum::IntoEnumIterator>::iter()
    }

    /// Its name on the wire (`"bpf_attach"`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub step: Step,
}

/// The functions a `trigger` step can make run, and what userspace reads
/// to run each: one list for the agent and the runner's suite checks.
pub const TRIGGER_TARGETS: &[(&str, &str)] = &[
    ("cmdline_proc_show", "/proc/cmdline"),
    (
        "coexist_target_value",
        "/sys/kernel/debug/coexist_target/value",
    ),
    (
        "coexist_target_value2",
        "/sys/kernel/debug/coexist_target/value2",
    ),
];

/// Where the image puts the BPF fixture objects, and the agent loads them.
pub const BPF_FIXTURE_DIR: &str = "/fixtures/bpf";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BpfKind {
    Fentry,
    Fexit,
    FmodRet,
}

impl BpfKind {
    /// Every kind. A new kind added to the enum is a compile error in
    /// [`BpfKind::section`] until it has a section, and here through the
    /// array's length and the exhaustive match below.
    pub const ALL: [BpfKind; 3] = {
        // No wildcard: a new kind fails to compile here.
        const fn listed(k: BpfKind) -> usize {
            match k {
                BpfKind::Fentry => 0,
                BpfKind::Fexit => 1,
                BpfKind::FmodRet => 2,
            }
        }
        let all = [BpfKind::Fentry, BpfKind::Fexit, BpfKind::FmodRet];
        assert!(listed(all[0]) == 0 && listed(all[1]) == 1 && listed(all[2]) == 2);
        all
    };

    /// The kind of a program in ELF section `section`, the one rule the
    /// runner (which fixtures a suite may name) and the agent (what it
    /// attaches) share: the kind's section (`fentry`), or libbpf's form
    /// with a target (`fentry/<function>`), which the attach step's
    /// target replaces.
    pub fn of_section(section: &str) -> Option<BpfKind> {
        BpfKind::ALL.into_iter().find(|k| {
            section
                .strip_prefix(k.section())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The ELF section libbpf uses for this kind.
    pub fn section(self) -> &'static str {
        match self {
            BpfKind::Fentry => "fentry",
            BpfKind::Fexit => "fexit",
            BpfKind::FmodRet => "fmod_ret",
        }
    }
}

/// What a BPF fixture program recorded (its `stats` map).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BpfStats {
    pub hits: u64,
    /// First argument of the last call.
    pub arg0: u64,
    /// Return value of the last call (fexit, as an int).
    pub ret: i64,
    /// What a seq_file show function wrote (cx_fexit_seq), as text.
    pub seen: String,
}

/// A function's entry in `enabled_functions`, as the kernel prints it:
/// `name [mod] (refs) R I D<TAB>tramp: ... ->...` then `<TAB>direct-->target`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FtraceState {
    pub present: bool,
    pub function: String,
    pub module: Option<String>,
    /// The record's reference count (how many ftrace_ops use it).
    pub refs: u64,
    /// Flags as printed: any of "R", "I", "D", in that order. (From 6.4
    /// on the kernel prints " O" (call ops) and " M" (modified) after
    /// them; those are in `raw` only.)
    pub flags: String,
    pub tramp: Option<String>,
    pub direct: Option<String>,
    /// The lines as printed.
    pub raw: String,
}

/// Finds `function` in the text of `enabled_functions`.
pub fn parse_enabled_functions(text: &str, function: &str) -> FtraceState {
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with('\t') || l.trim().is_empty() {
            continue;
        }
        let Some(open) = l.find(" (") else { continue };
        let head = &l[..open];
        let (name, module) = match head.split_once(" [") {
            Some((n, m)) => (n, Some(m.trim_end_matches(']').to_string())),
            None => (head, None),
        };
        if name != function {
            continue;
        }
        let rest = &l[open + 2..];
        let Some(close) = rest.find(')') else {
            continue;
        };
        let refs = rest[..close].parse().unwrap_or(0);
        let after = &rest[close + 1..];
        let flag_area: Vec<char> = after.chars().take(6).collect();
        let mut flags = String::new();
        for (i, f) in ['R', 'I', 'D'].iter().enumerate() {
            if flag_area.get(2 * i + 1) == Some(f) {
                flags.push(*f);
            }
        }
        let tramp = after
            .split_once("tramp: ")
            .map(|(_, t)| t.split_whitespace().next().unwrap_or("").to_string());
        let mut raw = l.to_string();
        let mut direct = after
            .split_once("direct-->")
            .map(|(_, d)| d.trim().to_string());
        while let Some(next) = lines.peek() {
            if !next.starts_with('\t') {
                break;
            }
            if let Some(d) = next.trim().strip_prefix("direct-->") {
                direct = Some(d.to_string());
            }
            raw.push('\n');
            raw.push_str(next);
            lines.next();
        }
        return FtraceState {
            present: true,
            function: name.to_string(),
            module,
            refs,
            flags,
            tramp,
            direct,
            raw,
        };
    }
    FtraceState {
        function: function.to_string(),
        ..Default::default()
    }
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
    /// Structured result of the step (see each [`Step`]).
    #[serde(default)]
    pub data: Option<AnswerData>,
    pub duration_us: u64,
}

/// The structured result of a step, by the kind of step that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnswerData {
    /// livepatch_load, livepatch_disable.
    Livepatch(LivepatchData),
    /// hello.
    Hello(HelloData),
    /// livepatch_state.
    LivepatchState(LivepatchState),
    /// bpf_attach.
    Attach(AttachData),
    /// bpf_stats.
    Stats(BpfStats),
    /// ftrace_state.
    Ftrace(FtraceState),
    /// repeat.
    Repeat(RepeatData),
    /// concurrently.
    Concurrently(ConcurrentlyData),
    /// read_files.
    Files(FilesData),
}

/// The files read_files found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FilesData {
    pub files: Vec<FileData>,
}

/// One file read back from the guest (read_files).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileData {
    /// Its path in the guest.
    pub path: String,
    /// Its bytes, base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LivepatchData {
    /// The patch's name in /sys/kernel/livepatch (livepatch_load).
    #[serde(default)]
    pub name: Option<String>,
    /// How long the transition took (or had taken when it timed out).
    pub transition_ms: f64,
}

/// Who answered a hello.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HelloData {
    pub agent_version: String,
    pub kernel_release: String,
    pub uptime_s: f64,
    /// `/proc/sys/kernel/random/boot_id`: the same for every guest restored
    /// from one snapshot, and for the guest the snapshot was taken of.
    pub boot_id: String,
}

/// A livepatch as sysfs shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LivepatchState {
    /// `/sys/kernel/livepatch/<name>` exists.
    pub present: bool,
    /// `enabled` reads 1.
    pub enabled: bool,
    /// `transition` reads 1.
    pub transition: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachData {
    /// What bpf_stats and bpf_detach name the attachment by.
    pub handle: u32,
}

/// One failing inner step of a `repeat` (the first 20 are kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InnerFailure {
    pub iteration: u32,
    /// 0-based position in the repeated list.
    pub index: usize,
    pub errno_name: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepeatData {
    pub iterations: u32,
    /// Inner steps that failed, over all iterations.
    pub failed: u64,
    pub failures: Vec<InnerFailure>,
}

/// What one thread of a `concurrently` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadData {
    pub iterations: u64,
    /// Inner steps that succeeded.
    pub ok: u64,
    pub failed: u64,
    /// Failures by errno name ("other" without one).
    pub errnos: BTreeMap<String, u64>,
    /// The thread panicked (its counts are lost).
    #[serde(default)]
    pub panicked: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConcurrentlyData {
    pub threads: Vec<ThreadData>,
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
    fn the_section_rule_is_one() {
        for k in BpfKind::ALL {
            assert_eq!(BpfKind::of_section(k.section()), Some(k));
            assert_eq!(
                BpfKind::of_section(&format!("{}/cmdline_proc_show", k.section())),
                Some(k)
            );
        }
        for s in [
            "kprobe/x",
            "fentry.s",
            "fexitx",
            "",
            "fmod_ret_x",
            "tracepoint",
        ] {
            assert_eq!(BpfKind::of_section(s), None, "{s}");
        }
    }

    #[test]
    fn enabled_functions_as_the_kernel_prints_them() {
        // 6.1 t_show(): " (%ld)%s%s%s" with " R"/"  ", " I"/"  ", " D"/"  ".
        let text = "schedule (1)     D\n\tdirect-->my_tramp+0x0/0x20 [ftrace_direct]\n\
cmdline_proc_show (2) R I D\ttramp: 0xffffffffc0002000 (klp_ftrace_handler+0x0/0x160) ->ftrace_ops_list_func+0x0/0x1b0\n\
\tdirect-->bpf_trampoline_6442462397+0x0/0x1000\n\
coexist_target_value [coexist_target] (1) R I   \ttramp: 0xffffffffc0004000 (klp_ftrace_handler+0x0/0x160) ->klp_ftrace_handler+0x0/0x160\n";
        let s = parse_enabled_functions(text, "cmdline_proc_show");
        assert!(s.present);
        assert_eq!(s.refs, 2);
        assert_eq!(s.flags, "RID");
        assert_eq!(s.tramp.as_deref(), Some("0xffffffffc0002000"));
        assert_eq!(
            s.direct.as_deref(),
            Some("bpf_trampoline_6442462397+0x0/0x1000")
        );
        assert!(s.raw.contains("\n\tdirect-->"));
        let t = parse_enabled_functions(text, "coexist_target_value");
        assert_eq!(t.module.as_deref(), Some("coexist_target"));
        assert_eq!(t.flags, "RI");
        assert_eq!(t.refs, 1);
        assert_eq!(t.direct, None);
        // 6.12 t_show(): " O" and " M " columns after " D".
        let text612 = "cmdline_proc_show (2) R I D   M \ttramp: 0xffffffffc0002000 (klp_ftrace_handler+0x0/0x160) ->ftrace_ops_list_func+0x0/0x1b0\n\
\tdirect-->bpf_trampoline_6442462397+0x0/0x1000\n";
        let u = parse_enabled_functions(text612, "cmdline_proc_show");
        assert_eq!((u.refs, u.flags.as_str()), (2, "RID"));
        assert!(u.raw.contains(" M "), "{}", u.raw);
        let a = parse_enabled_functions(text, "absent_fn");
        assert!(!a.present);
        let sch = parse_enabled_functions(text, "schedule");
        assert_eq!(sch.flags, "D");
        assert_eq!(
            sch.direct.as_deref(),
            Some("my_tramp+0x0/0x20 [ftrace_direct]")
        );
    }

    #[test]
    fn nested_steps_parse() {
        let r: Request = serde_json::from_str(
            r#"{"id":1,"step":"concurrently","duration_ms":100,"lists":[[{"step":"bpf_attach","program":"cx_fentry","kind":"fentry","target":"f"}],[{"step":"sleep","ms":1}]]}"#,
        )
        .unwrap();
        match r.step {
            Step::Concurrently { lists, .. } => assert_eq!(lists.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<Request>(
            r#"{"id":1,"step":"bpf_attach","program":"p","kind":"kprobe","target":"f"}"#
        )
        .is_err());
    }

    #[test]
    fn kinds_are_the_wire_names() {
        assert!(Step::kinds().contains(&"bpf_attach"));
        assert!(Step::kinds().contains(&"poweroff"));
        assert_eq!(Step::Poweroff.kind(), "poweroff");
        assert_eq!(Step::BpfDetach { handle: None }.kind(), "bpf_detach");
        // Every kind round-trips through the wire format under its name.
        let s = serde_json::to_value(Step::FtraceState {
            function: "f".into(),
        })
        .unwrap();
        assert_eq!(s["step"], "ftrace_state");
    }

    #[test]
    fn answer_data_is_tagged_by_type() {
        let a = Answer {
            id: Some(1),
            ok: true,
            data: Some(AnswerData::Attach(AttachData { handle: 3 })),
            ..Default::default()
        };
        let s = serde_json::to_string(&a).unwrap();
        assert!(s.contains(r#""data":{"type":"attach","handle":3}"#), "{s}");
        assert_eq!(serde_json::from_str::<Answer>(&s).unwrap(), a);
        let c = AnswerData::Concurrently(ConcurrentlyData {
            threads: vec![ThreadData {
                iterations: 2,
                errnos: [("EAGAIN".to_string(), 1)].into_iter().collect(),
                ..Default::default()
            }],
        });
        let v = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AnswerData>(&v).unwrap(), c);
        // Bytes go as base64, and come back as they were.
        let f = AnswerData::Files(FilesData {
            files: vec![FileData {
                path: "/sys/kernel/debug/gcov/x.gcda".into(),
                bytes: vec![0, 1, 0xff, b'a'],
            }],
        });
        let v = serde_json::to_string(&f).unwrap();
        assert!(v.contains(r#""bytes":"AAH/YQ==""#), "{v}");
        assert_eq!(serde_json::from_str::<AnswerData>(&v).unwrap(), f);
    }

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
