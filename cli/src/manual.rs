//! `sp2a completions SHELL` and `sp2a man`: shell completions and manual
//! pages generated from the command's own clap definitions, so they never
//! drift from what the binary accepts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for. Bash: `sp2a completions bash >
    /// ~/.local/share/bash-completion/completions/sp2a`; zsh: into a
    /// directory on `$fpath` as `_sp2a`; fish: into
    /// `~/.config/fish/completions/sp2a.fish`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `sp2a.1` and a page per subcommand (`sp2a-pull.1`, ...) into
    /// this directory (created if missing) instead of printing `sp2a.1`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    write_completions(args.shell, &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completions")?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.out {
        Some(dir) => {
            let written = write_pages(&dir)?;
            println!("{written} manual pages in {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(crate::Cli::command())
                .render(&mut out)
                .context("cannot render the manual page")?;
            std::io::stdout()
                .write_all(&out)
                .context("cannot write the manual page")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_completions(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    clap_complete::generate(shell, &mut crate::Cli::command(), "sp2a", out);
}

/// Writes every page under `dir`; returns how many.
fn write_pages(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    fn pages(command: &clap::Command) -> usize {
        1 + command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(pages)
            .sum::<usize>()
    }
    Ok(pages(&crate::Cli::command()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's page name, with nested ones.
    fn subcommands(command: &clap::Command, prefix: &str, into: &mut Vec<String>) {
        for sub in command.get_subcommands() {
            let name = format!("{prefix}{}", sub.get_name());
            into.push(name.clone());
            subcommands(sub, &format!("{name}-"), into);
        }
    }

    #[test]
    fn bash_completions_parse_and_know_every_subcommand_and_flag() {
        let mut script = Vec::new();
        write_completions(clap_complete::Shell::Bash, &mut script);
        let script = String::from_utf8(script).unwrap();
        for word in ["pull", "audit", "--share", "--policy", "first-call"] {
            assert!(script.contains(word), "{word} missing");
        }
        // bash itself accepts the script.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sp2a.bash");
        std::fs::write(&path, &script).unwrap();
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("bash runs");
        assert!(status.success(), "bash rejects the completion script");
    }

    #[test]
    fn zsh_and_fish_completions_name_the_subcommands() {
        for (shell, flag) in [
            (clap_complete::Shell::Zsh, "'*--share="),
            (clap_complete::Shell::Fish, "-l share"),
        ] {
            let mut script = Vec::new();
            write_completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("pull") && script.contains(flag), "{shell}");
        }
    }

    #[test]
    fn a_manual_page_for_the_command_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(&dir.path().join("man1")).unwrap();
        let dir = dir.path().join("man1");
        let mut expected = Vec::new();
        subcommands(&crate::Cli::command(), "sp2a-", &mut expected);
        assert_eq!(written, 1 + expected.len(), "{expected:?}");
        for name in &expected {
            assert!(dir.join(format!("{name}.1")).exists(), "{name}.1");
        }
        let page = std::fs::read_to_string(dir.join("sp2a-pull.1")).unwrap();
        assert!(page.contains(".TH sp2a-pull 1"), "{page}");
        // groff formats the main page without complaint.
        let output = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join("sp2a.1"))
            .output()
            .expect("groff runs");
        assert!(output.status.success());
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
