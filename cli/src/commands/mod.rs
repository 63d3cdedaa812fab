//! The commands: each file turns one group of parsed arguments into calls on the
//! service and prints the outcome. [`run`] connects (except for `completions` and
//! `man`, which need no bus) and dispatches.

mod man;
mod monitor;
mod pool;
mod revisions;
mod service;
mod space;
mod transfer;
mod volume;

use std::io::IsTerminal;

use crate::args::{Cli, Command};
use crate::client::{Client, Interaction};
use crate::error::Result;
use crate::polkit_agent::PolkitAgent;
use crate::progress::ProgressMode;

/// What every command that talks to the service gets.
pub struct Context {
    pub client: Client,
    pub json: bool,
    pub progress: ProgressMode,
}

pub async fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        Command::Completions { shell } => return crate::completion::print_registration(shell),
        Command::Man { out_dir } => return man::print_man(out_dir.as_deref()),
        command => command,
    };
    let interaction = Interaction::choose(cli.no_interaction, std::io::stdin().is_terminal());
    let progress = ProgressMode::choose(
        cli.json,
        cli.progress,
        cli.no_progress,
        std::io::stderr().is_terminal(),
    );
    let _agent = match interaction == Interaction::Allowed && command.needs_authorization() {
        true => PolkitAgent::start(),
        false => None,
    };
    let client = Client::connect(&cli.bus, interaction).await?;
    let context = Context {
        client,
        json: cli.json,
        progress,
    };
    dispatch(&context, command).await
}

async fn dispatch(context: &Context, command: Command) -> Result<()> {
    match command {
        Command::Pool(command) => pool::run(context, command).await,
        Command::Volume(command) => volume::run(context, command).await,
        Command::Monitor(args) => monitor::run(context, args).await,
        Command::Status => service::status(context).await,
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
    }
}
