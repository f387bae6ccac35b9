//! `completions <shell>`: shell completion scripts (clap_complete).

use clap::CommandFactory as _;
use clap_complete::Shell;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell)
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf completions bash > /etc/bash_completion.d/bpf-ringbuf
  bpf-ringbuf completions zsh > ~/.zfunc/_bpf-ringbuf
  bpf-ringbuf completions fish > ~/.config/fish/completions/bpf-ringbuf.fish")]
pub struct Args {
    /// The shell.
    shell: Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "bpf-ringbuf", &mut out);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
    Ok(())
}
