//! `coexist shell` driven like a person would, through a pty with rexpect:
//! shell lines and JSON agent steps in a real guest.

use std::path::Path;

#[test]
fn shell_runs_steps_and_commands_by_hand() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cmd = format!(
        "{} shell --variant share-ipmodify --accel tcg --root {}",
        env!("CARGO_BIN_EXE_coexist"),
        root.display()
    );
    // Kernel, fixtures and image may need building on a cold cache.
    let mut p = rexpect::spawn(&cmd, Some(900_000)).expect("spawn coexist shell");
    p.exp_string("READY share-ipmodify: kernel 6.1.192")
        .unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line(r#"{"step":"livepatch_load","module":"livepatch-sample"}"#)
        .unwrap();
    p.exp_string("livepatch_sample: transition done").unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line(r#"{"step":"bpf_attach","program":"cx_fexit_seq","kind":"fexit","target":"cmdline_proc_show"}"#)
        .unwrap();
    p.exp_string("handle 1: cx_fexit_seq on cmdline_proc_show")
        .unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line("cat /proc/cmdline").unwrap();
    p.exp_string("this has been live patched").unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line(r#"{"step":"bpf_stats","handle":1}"#).unwrap();
    p.exp_regex(r#"hits=1 .*seen="this has been live patched\\n""#)
        .unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line(r#"{"step":"rmmod","name":"livepatch_sample"}"#)
        .unwrap();
    p.exp_string("error [EAGAIN (11)]").unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line(r#"{"step":"frobnicate"}"#).unwrap();
    p.exp_string("not an agent step").unwrap();
    p.exp_string("guest# ").unwrap();
    p.send_line("exit").unwrap();
    p.exp_eof().unwrap();
}
