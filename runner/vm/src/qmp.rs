//! A minimal QMP client: the JSON lines QEMU's monitor speaks on a unix
//! socket. Enough to stop a guest and migrate its state to a file.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use coexist_core::text::clip;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket at start; retried up to
    /// `timeout`), reads the greeting and enters command mode.
    pub fn connect(sock: &Path, timeout: Duration) -> Result<Qmp, String> {
        let t0 = Instant::now();
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("QMP {}: {e}", sock.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!(
                "QMP: not a greeting: {}",
                clip(&greeting.to_string(), 512)
            ));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?
            == 0
        {
            return Err("QMP: QEMU closed the monitor".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {}", clip(&line, 512)))
    }

    /// Runs a command; its `return` value, or its error.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = if args.as_object().is_some_and(|o| o.is_empty()) {
            json!({ "execute": cmd })
        } else {
            json!({ "execute": cmd, "arguments": args })
        };
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!(
                    "QMP {cmd}: {}",
                    e["desc"].as_str().unwrap_or("error")
                ));
            }
        }
    }

    /// Writes the guest's whole state with `migrate` to `uri` (QEMU stops
    /// the guest for the last pass), waiting up to `timeout` for it to
    /// complete. The guest is not stopped first: the state records the run
    /// state, and a guest saved stopped would restore stopped.
    pub fn save(&mut self, uri: &str, timeout: Duration) -> Result<(), String> {
        self.execute("migrate", json!({ "uri": uri }))?;
        let t0 = Instant::now();
        loop {
            let st = self.execute("query-migrate", json!({}))?;
            match st["status"].as_str().unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(format!(
                        "migration {}: {}",
                        st["status"].as_str().unwrap_or(""),
                        st["error-desc"].as_str().unwrap_or("no reason given")
                    ))
                }
                _ if t0.elapsed() > timeout => {
                    return Err(format!(
                        "migration not done after {:.0} s",
                        timeout.as_secs_f64()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}
