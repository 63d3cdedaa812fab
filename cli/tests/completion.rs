//! Shell completion in the real shells, the way a user meets it: bash, zsh and fish run
//! in a terminal (tmux), load the script `qubes-storage completions SHELL` prints the
//! way a package installs it (bash sources it, zsh autoloads it from `$fpath`, fish from
//! its completion path), and the test types a command and presses TAB. The candidates
//! for pools and vids come from the service on the test's private bus
//! (`QUBES_STORAGE_BUS`); a second pool with its own volume proves that the vids are
//! those of the pool typed.

mod common;

use std::path::Path;

use common::*;
use qubes_storaged_testkit::terminal::Terminal;

const CLI: &str = env!("CARGO_BIN_EXE_qubes-storage");

#[derive(Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Two pools in plain directories, each with one volume.
fn world_with_two_pools() -> World {
    let world = World::start();
    for (pool, vid) in [("p1", "appvms/work/private"), ("other", "appvms/zzz/root")] {
        let dir = world.scratch().join(pool);
        let dir = dir.to_str().unwrap();
        world
            .cli(&["pool", "create", pool, "--dir", dir, "--no-setup-check"])
            .ok();
        world
            .cli(&[
                "volume",
                "create",
                pool,
                vid,
                "--size",
                "1M",
                "--rw",
                "--save-on-stop",
            ])
            .ok();
    }
    world
}

/// Writes the completion script where the shell looks for it; the shell's command.
fn install_script(shell: Shell, home: &Path) -> Vec<String> {
    let script = |name: &str| {
        let output = std::process::Command::new(CLI)
            .args(["completions", name])
            .output()
            .expect("run qubes-storage completions");
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    let write = |path: &Path, content: &[u8]| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    let home_str = home.to_str().unwrap().to_owned();
    match shell {
        Shell::Bash => {
            write(&home.join("qubes-storage.bash"), &script("bash"));
            let rc = format!("PS1='$ '\nsource {home_str}/qubes-storage.bash\n");
            write(&home.join("bashrc"), rc.as_bytes());
            [
                "bash",
                "--noprofile",
                "--rcfile",
                &format!("{home_str}/bashrc"),
                "-i",
            ]
            .map(String::from)
            .to_vec()
        }
        Shell::Zsh => {
            write(&home.join("functions/_qubes-storage"), &script("zsh"));
            let rc = format!(
                "PS1='$ '\nfpath=({home_str}/functions $fpath)\nautoload -Uz compinit\ncompinit -u -D\n"
            );
            write(&home.join(".zshrc"), rc.as_bytes());
            ["zsh", "-d", "-i"].map(String::from).to_vec()
        }
        Shell::Fish => {
            write(
                &home.join("completions/qubes-storage.fish"),
                &script("fish"),
            );
            let init = format!(
                "set -g fish_greeting; set -g fish_complete_path {home_str}/completions $fish_complete_path; \
                 function fish_prompt; echo -n '$ '; end"
            );
            ["fish", "--no-config", "-C", &init]
                .map(String::from)
                .to_vec()
        }
    }
}

/// A terminal running `shell` with the completion script installed, at its prompt.
fn terminal(shell: Shell, world: &World) -> Terminal {
    let home = world.scratch().join("home");
    let command = install_script(shell, &home);
    let bin_dir = Path::new(CLI)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let env = [
        ("PATH", format!("{bin_dir}:/usr/bin:/bin")),
        ("HOME", home.to_str().unwrap().to_owned()),
        ("ZDOTDIR", home.to_str().unwrap().to_owned()),
        ("TERM", "xterm".to_owned()),
        ("QUBES_STORAGE_BUS", world.bus_address().to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let program: Vec<&str> = command.iter().map(String::as_str).collect();
    let terminal = Terminal::start(&env, &program);
    terminal.wait_for_line("$");
    terminal
}

/// Types `text`, presses TAB, and waits for the line to read `completed`.
fn completes(shell: Shell, text: &str, completed: &str) {
    let world = world_with_two_pools();
    let terminal = terminal(shell, &world);
    terminal.type_text(text);
    terminal.press("Tab");
    terminal.wait_for_line(&format!("$ {completed}"));
}

#[test]
fn bash_completes_a_subcommand_below_the_first() {
    completes(
        Shell::Bash,
        "qubes-storage volume sta",
        "qubes-storage volume start",
    );
}

#[test]
fn bash_completes_a_pool_name_from_the_service() {
    completes(
        Shell::Bash,
        "qubes-storage volume start p",
        "qubes-storage volume start p1",
    );
}

#[test]
fn bash_completes_a_vid_of_the_pool_typed() {
    let typed = "qubes-storage volume start p1 app";
    completes(
        Shell::Bash,
        typed,
        "qubes-storage volume start p1 appvms/work/private",
    );
}

#[test]
fn zsh_completes_a_subcommand_below_the_first() {
    completes(
        Shell::Zsh,
        "qubes-storage volume sta",
        "qubes-storage volume start",
    );
}

#[test]
fn zsh_completes_a_pool_name_from_the_service() {
    completes(
        Shell::Zsh,
        "qubes-storage volume start p",
        "qubes-storage volume start p1",
    );
}

#[test]
fn zsh_completes_a_vid_of_the_pool_typed() {
    let typed = "qubes-storage volume start p1 app";
    completes(
        Shell::Zsh,
        typed,
        "qubes-storage volume start p1 appvms/work/private",
    );
}

#[test]
fn fish_completes_a_subcommand_below_the_first() {
    completes(
        Shell::Fish,
        "qubes-storage volume sta",
        "qubes-storage volume start",
    );
}

#[test]
fn fish_completes_a_pool_name_from_the_service() {
    completes(
        Shell::Fish,
        "qubes-storage volume start p",
        "qubes-storage volume start p1",
    );
}

#[test]
fn fish_completes_a_vid_of_the_pool_typed() {
    let typed = "qubes-storage volume start p1 app";
    completes(
        Shell::Fish,
        typed,
        "qubes-storage volume start p1 appvms/work/private",
    );
}
