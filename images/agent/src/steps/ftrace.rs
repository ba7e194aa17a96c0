//! What ftrace says about a function: its entry in enabled_functions.

use coexist_proto::{Answer, AnswerData};

use super::{errno_of, fail, ok, with_data};

const ENABLED_FUNCTIONS: &str = "/sys/kernel/tracing/enabled_functions";

/// The function's entry as printed (or `<function>: absent`), and parsed
/// into the data.
pub fn ftrace_state(id: u64, function: &str) -> Answer {
    let path = ENABLED_FUNCTIONS;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let st = coexist_proto::parse_enabled_functions(&text, function);
            let out = if st.present {
                st.raw.clone()
            } else {
                format!("{function}: absent")
            };
            with_data(ok(id, out), AnswerData::Ftrace(st))
        }
        Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
    }
}
