//! Stage 0: the host. Before anything is keyed (the toolchain identity
//! is part of every kernel's key), every Debian package the project needs
//! is installed: the list in `.ci/packages` (the one `.ci/run` uses) and
//! the packages that ship the declared kernel sources.
//!
//! apt's lists are refreshed first (`apt-get update`, once, saying why)
//! when they are older than a day; runs on one host refresh one at a
//! time and share the refresh (a stamp and a lock under `/var/tmp`), and
//! an apt that is not ours holding apt's lock is waited for. Missing packages are installed in ONE
//! apt transaction, after one `apt-get update`, and only if apt would
//! remove or downgrade nothing
//! (`--no-remove`, checked first with a simulation); otherwise setup stops
//! and prints the exact command for the user to decide. With
//! [`Removals::Allow`] (`setup --allow-remove`, the user's explicit
//! consent) it runs that same transaction when apt would only remove
//! packages; a downgrade is still refused. Not root: it prints the
//! command.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::build::source::install_command;
use crate::build::variant::VariantsFile;
use crate::build::Project;
use crate::events::{self, EventSink};

/// The variants file as declared, if it reads (one that does not is for
/// the command to report, with its position).
fn declared(project: &Project) -> Option<VariantsFile> {
    let t = std::fs::read_to_string(project.variants_file()).ok()?;
    serde_yaml::from_str(&t).ok()
}

/// The kernel image packages of the prebuilt variants: downloaded, never
/// installed, but apt must know them.
fn prebuilt_packages(f: &VariantsFile) -> Vec<String> {
    let mut v: Vec<String> = f
        .variants
        .iter()
        .filter_map(|d| d.prebuilt.as_ref())
        .filter_map(|p| pinned(p).map(|(img, _)| img))
        .collect();
    v.dedup();
    v
}

/// A prebuilt declaration's image and headers packages: as declared, or,
/// for `track:`, those of the line's newest ABI apt knows (none when it
/// knows none: the command reports that at the declaration).
fn pinned(p: &crate::build::variant::PrebuiltDecl) -> Option<(String, Option<String>)> {
    match &p.track {
        None => Some((p.debian_package.clone(), p.headers.clone())),
        Some(line) => {
            let (img, hdr) =
                crate::build::prebuilt::abi_packages(&crate::build::prebuilt::track(line).ok()?);
            Some((img, Some(hdr)))
        }
    }
}

/// apt's lists older than this are refreshed (`apt-get update`, once)
/// before setup resolves or installs anything.
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where apt keeps its package lists.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// Whether a file of [`APT_LISTS`] is one `apt-get update` refreshes: a
/// `..._Packages` list, also compressed as apt may keep it
/// (`..._Packages.lz4`), or an `InRelease` file.
fn is_list_file(name: &str) -> bool {
    name.contains("_Packages") || name.ends_with("Release")
}

/// How long ago apt's lists were last refreshed: the newest of its list
/// files and of `stamp`, this project's record of its last `apt-get
/// update` (apt leaves a list that did not change untouched). None: no
/// lists at all.
fn lists_age(stamp: &Path) -> Option<Duration> {
    let mut newest = std::fs::metadata(stamp).and_then(|m| m.modified()).ok();
    for e in std::fs::read_dir(APT_LISTS).ok()?.flatten() {
        if !is_list_file(&e.file_name().to_string_lossy()) {
            continue;
        }
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = Some(newest.map_or(t, |n: SystemTime| n.max(t)));
        }
    }
    newest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
}

/// Why apt's lists must be refreshed before setup goes on, if they must:
/// a package the project declares that apt does not know, or lists older
/// than [`LISTS_MAX_AGE`] (or none at all).
pub fn refresh_reason(age: Option<Duration>, unknown: &[String]) -> Option<String> {
    if !unknown.is_empty() {
        return Some(format!(
            "apt does not know {}",
            unknown
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match age {
        None => Some("apt has no package lists".into()),
        Some(a) if a > LISTS_MAX_AGE => Some(format!(
            "apt's package lists are {} days old",
            a.as_secs() / 86400
        )),
        Some(_) => None,
    }
}

fn apt(args: &[&str]) -> Result<std::process::Output> {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run apt-get")
}

/// This project's record of its last `apt-get update`, and the lock its
/// runs take around one: host-wide, as apt's lists are (two runs with
/// different caches, or two tests, share one refresh).
const HOST_STAMP: &str = "/var/tmp/coexist-apt-updated";
const HOST_LOCK: &str = "/var/tmp/coexist-apt.lock";

/// How long `apt-get update` waits for apt's own lock, held by an apt
/// that is not ours (apt-get does not wait for its lists lock itself).
const APT_LOCK_WAIT: Duration = Duration::from_secs(600);

/// `apt-get update`, run while holding [`HOST_LOCK`], and tried again
/// while another apt holds apt's lists lock (for up to [`APT_LOCK_WAIT`]).
fn apt_update(ev: &dyn EventSink) -> Result<std::process::Output> {
    let start = std::time::Instant::now();
    let mut told = false;
    loop {
        let up = apt(&["update", "-q"])?;
        let err = String::from_utf8_lossy(&up.stderr);
        if up.status.success() || !err.contains("Could not get lock") {
            return Ok(up);
        }
        if start.elapsed() > APT_LOCK_WAIT {
            return Ok(up);
        }
        if !told {
            told = true;
            events::note(
                ev,
                format!(
                    "setup: waiting for apt's lock ({})",
                    err.lines().next().unwrap_or("").trim()
                ),
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Refreshes apt's lists, once, as root, saying why ([`refresh_reason`]),
/// when they are older than [`LISTS_MAX_AGE`]. Returns whether it ran
/// `apt-get update` successfully. A failed refresh stops setup only when
/// a declared package is unknown; a merely old list is used as it is,
/// with a note. Runs of this project refresh one at a time
/// ([`HOST_LOCK`]); one that waited finds the lists fresh and goes on.
fn refresh_lists(stamp: &Path, declared: &[String], ev: &dyn EventSink) -> Result<bool> {
    // Lists refreshed within the day are trusted as they are: no apt call
    // on every command (a package they do not know is then an error at
    // its declaration, which says to refresh them).
    if lists_age(stamp).is_some_and(|a| a <= LISTS_MAX_AGE) {
        return Ok(false);
    }
    let root = nix::unistd::geteuid().is_root();
    let _held = if root {
        Some(crate::cache::lock_file(Path::new(HOST_LOCK), || {
            events::note(ev, "setup: waiting for another run's apt-get update");
        })?)
    } else {
        None
    };
    // Another run may have refreshed them while this one waited.
    let age = lists_age(stamp);
    if age.is_some_and(|a| a <= LISTS_MAX_AGE) {
        crate::build::prebuilt::forget_resolved();
        return Ok(false);
    }
    // One apt-cache call; what it resolves, the prebuilt kernels use.
    let unknown = crate::build::prebuilt::resolve_packages(declared)?;
    let Some(why) = refresh_reason(age, &unknown) else {
        return Ok(false);
    };
    if !root {
        // The packages' own errors (at their declarations) say the rest.
        if !unknown.is_empty() {
            events::note(ev, format!("setup: {why}; as root, run: apt-get update"));
        }
        return Ok(false);
    }
    events::note(ev, format!("setup: {why}; running apt-get update"));
    let up = apt_update(ev)?;
    // Tried: an old list is not tried again for a day, even offline.
    if let Some(d) = stamp.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(stamp, b"");
    if up.status.success() {
        crate::build::prebuilt::forget_resolved();
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&up.stderr);
    if unknown.is_empty() {
        events::note(
            ev,
            format!(
                "setup: apt-get update failed; going on with the lists as they are ({})",
                err.lines().next().unwrap_or("").trim()
            ),
        );
        return Ok(false);
    }
    bail!("setup: {why}, and apt-get update failed:\n{}", err.trim())
}

/// The project's package list: `.ci/packages`, one a line, `#` comments.
pub fn project_packages(project: &Project) -> Result<Vec<String>> {
    packages(project, declared(project).as_ref())
}

/// [`project_packages`], given the variants file as declared.
fn packages(project: &Project, decl: Option<&VariantsFile>) -> Result<Vec<String>> {
    let path = project.root.join(".ci/packages");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: Vec<String> = parse_list(&text);
    // The packages that ship the declared sources (linux-source-6.1), and
    // the headers prebuilt kernels' modules build against.
    if let Some(f) = decl {
        let headers = f
            .variants
            .iter()
            .filter_map(|d| d.prebuilt.as_ref().and_then(|p| pinned(p)?.1));
        for p in f
            .sources
            .iter()
            .filter_map(|s| s.debian_package.clone())
            .chain(headers)
        {
            if !v.contains(&p) {
                v.push(p);
            }
        }
    }
    Ok(v)
}

pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Which of `packages` are not installed, from `dpkg-query -W -f` output
/// (`<name> <status>` per line; a package dpkg has never seen is absent).
pub fn missing_from_dpkg(packages: &[String], dpkg_output: &str) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            !dpkg_output.lines().any(|l| {
                l.split_once(' ').is_some_and(|(n, st)| {
                    n.split(':').next() == Some(p.as_str()) && st.ends_with("ok installed")
                })
            })
        })
        .cloned()
        .collect()
}

/// Packages `apt-get -s install` would remove (`Remv`) or downgrade.
pub fn harmful_changes(simulation: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in simulation.lines() {
        if let Some(rest) = l.strip_prefix("Remv ") {
            out.push(format!(
                "remove {}",
                rest.split_whitespace().next().unwrap_or(rest)
            ));
        } else if let Some(rest) = l.strip_prefix("Inst ") {
            // "Inst pkg [old] (new suite [arch])" for an upgrade or a
            // downgrade, "Inst pkg (new suite [arch])" for a new package:
            // a downgrade when new < old.
            let (name, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let old = after
                .trim_start()
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(o, _)| o.trim());
            let new = after
                .split_once('(')
                .and_then(|(_, r)| r.split_whitespace().next());
            if let (Some(old), Some(new)) = (old, new) {
                if dpkg_lt(new, old) {
                    out.push(format!("downgrade {name} from {old} to {new}"));
                }
            }
        }
    }
    out
}

fn dpkg_lt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "lt", b])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Which of `packages` dpkg does not have installed.
fn not_installed(packages: &[String]) -> Result<Vec<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(packages)
        .output()
        .context("cannot run dpkg-query (this needs a Debian system)")?;
    Ok(missing_from_dpkg(
        packages,
        &String::from_utf8_lossy(&out.stdout),
    ))
}

/// Whether setup may run a transaction in which apt removes packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removals {
    /// Stop and print the command (the default).
    Refuse,
    /// The user consented (`setup --allow-remove`).
    Allow,
}

/// What stops a transaction: every downgrade, and removals unless allowed.
pub fn refused_changes(harm: &[String], removals: Removals) -> Vec<String> {
    harm.iter()
        .filter(|h| removals == Removals::Refuse || !h.starts_with("remove "))
        .cloned()
        .collect()
}

/// Makes sure every package the project needs is installed (see the
/// module doc). Returns the packages it installed.
pub fn ensure(project: &Project, ev: &dyn EventSink, removals: Removals) -> Result<Vec<String>> {
    let decl = declared(project);
    let missing = not_installed(&packages(project, decl.as_ref())?)?;
    let mut asked = missing.clone();
    asked.extend(decl.as_ref().map(prebuilt_packages).unwrap_or_default());
    let updated = refresh_lists(Path::new(HOST_STAMP), &asked, ev)?;
    // Fresh lists may hold a newer ABI of a tracked line: its headers.
    let mut missing = if updated {
        not_installed(&packages(project, decl.as_ref())?)?
    } else {
        missing
    };
    if missing.is_empty() {
        return Ok(missing);
    }
    // A prebuilt kernel's headers package apt does not know is an error at
    // its declaration, not a failed transaction (a variants file that does
    // not load is for the command to report).
    if let Ok(variants) = project.load_variants(None) {
        for v in &variants {
            if v.source
                .headers_package()
                .is_some_and(|h| missing.iter().any(|m| m == h))
            {
                v.source.check()?;
            }
        }
    }
    let cmd = install_command(&missing);
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "packages this project needs are missing: {}; as root, run:\n  {cmd}",
            missing.join(" ")
        );
    }
    events::note(
        ev,
        format!(
            "setup: installing {} (one apt transaction)",
            missing.join(" ")
        ),
    );
    if !updated {
        let _held = crate::cache::lock_file(Path::new(HOST_LOCK), || {
            events::note(ev, "setup: waiting for another run's apt-get update");
        })?;
        let up = apt_update(ev)?;
        if !up.status.success() {
            bail!(
                "setup: apt-get update failed:\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
        crate::build::prebuilt::forget_resolved();
        missing = not_installed(&packages(project, decl.as_ref())?)?;
        if missing.is_empty() {
            return Ok(missing);
        }
    }
    let cmd = install_command(&missing);
    let mut sim_args = vec!["install", "-s", "-q"];
    sim_args.extend(missing.iter().map(String::as_str));
    let sim = apt(&sim_args)?;
    let harm = harmful_changes(&String::from_utf8_lossy(&sim.stdout));
    let refused = refused_changes(&harm, removals);
    if !refused.is_empty() || !sim.status.success() {
        bail!(
            "setup: installing {} would {}; nothing was changed. To accept that, run:\n  {}{}",
            missing.join(" "),
            if refused.is_empty() {
                format!("fail:\n{}", String::from_utf8_lossy(&sim.stderr).trim())
            } else {
                refused.join(", ")
            },
            cmd.replace(" --no-remove", ""),
            if refused.iter().all(|h| h.starts_with("remove ")) {
                "\n(or: cargo run -- setup --allow-remove)"
            } else {
                ""
            }
        );
    }
    // dpkg's lock, held by another apt, is waited for.
    let mut args = vec!["-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q"];
    if harm.is_empty() {
        args.push("--no-remove");
    } else {
        events::note(
            ev,
            format!("setup: --allow-remove: apt will {}", harm.join(", ")),
        );
    }
    args.extend(missing.iter().map(String::as_str));
    let out = apt(&args)?;
    if !out.status.success() {
        bail!(
            "setup: '{cmd}' failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let still = not_installed(&packages(project, decl.as_ref())?)?;
    if !still.is_empty() {
        bail!("setup: still missing after installing: {}", still.join(" "));
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_files_apt_refreshes_count_for_the_lists_age_compressed_or_not() {
        for yes in [
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
            "deb.debian.org_debian_dists_bookworm_InRelease",
        ] {
            assert!(is_list_file(yes), "{yes}");
        }
        for no in [
            "lock",
            "partial",
            "auxfiles",
            "deb.debian.org_debian_dists_bookworm_main_dep11_Components-amd64.yml.gz",
        ] {
            assert!(!is_list_file(no), "{no}");
        }
    }

    #[test]
    fn removals_stop_setup_unless_allowed_and_downgrades_always() {
        let harm = vec![
            "remove qemu-utils".to_string(),
            "downgrade libc6 from 2 to 1".to_string(),
        ];
        assert_eq!(refused_changes(&harm, Removals::Refuse), harm);
        assert_eq!(
            refused_changes(&harm, Removals::Allow),
            vec!["downgrade libc6 from 2 to 1".to_string()]
        );
        assert!(refused_changes(&harm[..1], Removals::Allow).is_empty());
    }

    #[test]
    fn package_list_with_comments() {
        assert_eq!(
            parse_list("# header\nqemu-system-x86\n\n  ccache  # compiler cache\n"),
            ["qemu-system-x86", "ccache"]
        );
    }

    #[test]
    fn missing_packages_from_dpkg_query() {
        let want: Vec<String> = ["ccache", "dwarves", "gcc", "bpftool"]
            .map(String::from)
            .to_vec();
        let dpkg = "ccache install ok installed\ndwarves deinstall ok config-files\ngcc:amd64 install ok installed\n";
        assert_eq!(missing_from_dpkg(&want, dpkg), ["dwarves", "bpftool"]);
    }

    #[test]
    fn removals_and_downgrades_in_a_simulation() {
        let sim = "\
NOTE: This is only a simulation!
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian-Security:12/stable-security [amd64])
Inst libargon2-1 (0~20171227-0.3+deb12u1 Debian:12/stable [amd64])
Inst xz-utils [5.4.1-1] (5.4.1-1+deb12u2 Debian:12/stable [amd64]) []
Remv qemu-utils [1:8.2.1+ds-1~bpo12+1]
Inst libfoo [2.0-1] (1.5-1 Debian:12/stable [amd64])
Inst linux-source-6.1 [6.1.172-1] (6.1.192-3 Debian:12/stable [all])
Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian-Security:12/stable-security [amd64])
";
        assert_eq!(
            harmful_changes(sim),
            ["remove qemu-utils", "downgrade libfoo from 2.0-1 to 1.5-1"]
        );
        assert!(install_command(&["a".into(), "b".into()]).ends_with("install --no-remove -y a b"));
    }

    #[test]
    fn the_project_list_holds_the_source_package() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = project_packages(&Project { root }).unwrap();
        for want in [
            "qemu-system-x86",
            "ccache",
            "dwarves",
            "linux-source-6.1",
            "linux-headers-6.1.0-57-amd64",
        ] {
            assert!(p.iter().any(|x| x == want), "{want} not in {p:?}");
        }
    }

    #[test]
    fn stale_or_incomplete_lists_are_refreshed_and_say_why() {
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_reason(Some(hour), &[]), None);
        assert_eq!(
            refresh_reason(Some(hour * 24 * 200 + hour / 2), &[]).as_deref(),
            Some("apt's package lists are 200 days old")
        );
        assert_eq!(
            refresh_reason(None, &[]).as_deref(),
            Some("apt has no package lists")
        );
        let unknown = ["linux-headers-6.1.0-57-amd64".to_string()];
        assert_eq!(
            refresh_reason(Some(hour), &unknown).as_deref(),
            Some("apt does not know 'linux-headers-6.1.0-57-amd64'")
        );
    }
}
